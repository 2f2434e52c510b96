"""Training benchmarks: end-to-end PPO throughput (`jaxstep bench train`), as JSON.

An update (a rollout of `config.rollout` steps from every env, then learning from it) is jitted, compiled and run
once, then run `repeats` more times from the same state, keeping the median. The rollout half alone is timed the
same way; learning takes the rest. Throughput is agent-steps (one agent, one env step) per second of update.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxstep.agents.config import PPOConfig
from jaxstep.agents.ppo import Train, make_train, steps_per_update


def _time(fn: Callable, arg: Any, repeats: int) -> tuple[float, float]:
    """(compile + first run seconds, median seconds of `repeats` later runs) of fn(arg)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(arg))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def time_update(train: Train, config: PPOConfig, repeats: int) -> dict:
    """Seconds per update and per rollout, the compile time of an update, and agent-steps per second, for a
    single-device `train` made from `config`."""
    state = train.init(jax.random.PRNGKey(config.seed))
    compile_seconds, seconds = _time(jax.jit(train.update), state, repeats)
    _, rollout_seconds = _time(jax.jit(train.collect), state, repeats)
    return dict(seconds_per_update=seconds, rollout_seconds=rollout_seconds,
                learn_seconds=max(seconds - rollout_seconds, 0.0), compile_seconds=compile_seconds,
                agent_steps_per_second=steps_per_update(config, train.env) / seconds)  # fmt: skip


def summary(row: dict) -> str:
    """One line of a `time_update` row."""
    ms = {k: row[k] * 1e3 for k in ("seconds_per_update", "rollout_seconds", "learn_seconds")}
    return (f"{row['agent_steps_per_second'] / 1e6:.2f} M agent-steps/s; update {ms['seconds_per_update']:.1f} ms = "
            f"rollout {ms['rollout_seconds']:.1f} ms + learning {ms['learn_seconds']:.1f} ms "
            f"(compile {row['compile_seconds']:.1f} s)")


def training(env: str = "explorer", n_envs: Sequence[int] = (8192,), repeats: int = 4,
             overrides: dict | None = None, progress: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """End-to-end PPO throughput for `env` at each n_envs, with `overrides` (PPOConfig fields) on the defaults.

    Returns {"benchmark": "train", ..., "results": [row per n_envs]}; each row has agent_steps_per_second,
    seconds_per_update, rollout_seconds, learn_seconds and compile_seconds, and the config it measured.
    """
    overrides = dict(overrides or {})
    results = []
    for n in n_envs:
        config = PPOConfig(env=env, n_envs=n, total_steps=10**15, **overrides)
        row = dict(env=env, n_envs=n, **time_update(make_train(config), config, repeats))
        row["config"] = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("total_steps",)}
        results.append(row)
        if progress:
            progress(f"{env} n_envs={n}: {summary(row)}")
    return dict(benchmark="train", env=env, overrides=overrides, device=str(jax.devices()[0].device_kind),
                platform=platform.machine(), jax=jax.__version__, results=results)  # fmt: skip
