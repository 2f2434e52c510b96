"""`PPOConfig`: everything a training run is built from, static and checked once where it is made."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxstep import envs


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything a training run is built from (all static). Steps are agent-steps (one agent, one env step)."""

    env: str = "waypoint"
    n_envs: int = 256
    rollout: int = 32  # env steps per update
    total_steps: int = 1_000_000  # agent-steps: n_envs * n_agents * rollout per update
    lr: float = 3e-4
    clip: float = 0.2
    entropy: float = 1e-2
    value_coef: float = 0.5
    gamma: float = 0.99
    lam: float = 0.97
    epochs: int = 4
    minibatches: int = 4
    max_grad_norm: float = 0.5
    agent: str = "lstm"  # or "feedforward"
    width: int = 256
    dtype: str = "float32"  # the network's compute dtype: "float32" or "bfloat16"
    value_target: str = "gae"  # or "vtrace"
    unroll: int = 8  # LSTM steps per loop iteration when learning (speed only: the result is the same)
    seed: int = 0
    env_config: tuple[tuple[str, Any], ...] = ()  # extra keyword arguments for jaxstep.make
    env_params: tuple[tuple[str, Any], ...] = ()  # changes to the env's default_params

    def __post_init__(self):
        for name in ("n_envs", "rollout", "total_steps", "epochs", "minibatches", "width", "unroll"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.agent not in ("lstm", "feedforward"):
            raise ValueError(f"agent: expected 'lstm' or 'feedforward', got {self.agent!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.value_target not in ("gae", "vtrace"):
            raise ValueError(f"value_target: expected 'gae' or 'vtrace', got {self.value_target!r}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma, lam: expected gamma in (0, 1] and lam in [0, 1], got {self.gamma}, {self.lam}")
        for name in ("lr", "clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        for name in ("entropy", "value_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")

    def make_env(self) -> envs.Env:
        return envs.make(self.env, n_envs=self.n_envs, **dict(self.env_config))

    def make_env_params(self, env: envs.Env):
        return dataclasses.replace(env.default_params, **dict(self.env_params))
