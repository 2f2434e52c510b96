"""Agents: an intake, an optional LSTM (reset where episodes end), a policy head and a value head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstep import spaces
from jaxstep.agents.heads import Intake

Carry = tuple[jax.Array, jax.Array]  # LSTM (c, h), each (B, width); unused (B, 1) zeros for feed-forward agents


class Agent(nn.Module):
    """Maps observations (B, ...) to (logits (B, n_actions), value (B,), carry).

    recurrent: an LSTM of `width` units after the intake; its carry is zeroed for rows where `reset` (B,) is true.
    dtype: the dtype the layers compute in ("bfloat16" halves memory traffic and uses tensor cores); parameters,
        the LSTM carry, logits and values stay float32.

    `encode` (the intake) and `head` (the LSTM and the outputs) are its two halves; `unroll` runs the intake over
    a whole sequence at once, since only the LSTM needs to go step by step.
    """

    observation_space: spaces.Dict
    n_actions: int
    width: int = 256
    recurrent: bool = True
    dtype: str = "float32"

    def setup(self):
        dtype = jnp.dtype(self.dtype)
        self.intake = Intake(self.observation_space, self.width, dtype)
        if self.recurrent:
            self.lstm = nn.OptimizedLSTMCell(self.width, dtype=dtype)
        self.policy = nn.Dense(self.n_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.critic = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))

    def __call__(self, obs: dict[str, jax.Array], carry: Carry, reset: jax.Array):
        return self.head(self.encode(obs), carry, reset)

    def encode(self, obs: dict[str, jax.Array]) -> jax.Array:
        """Features (B, width) of observations (B, ...)."""
        return self.intake(obs)

    def head(self, features: jax.Array, carry: Carry, reset: jax.Array):
        """(logits, value, carry) from features (B, width), carry and reset (B,)."""
        x = features
        if self.recurrent:
            carry = jax.tree.map(lambda c: jnp.where(reset[:, None], 0.0, c), carry)
            carry, x = self.lstm(carry, x)
            carry = jax.tree.map(lambda c: c.astype(jnp.float32), carry)
        x = x.astype(jnp.float32)
        return self.policy(x), self.critic(x)[..., 0], carry

    def initial_carry(self, batch: int) -> Carry:
        width = self.width if self.recurrent else 1  # unused, but checkpoints cannot hold empty arrays
        return jnp.zeros((batch, width)), jnp.zeros((batch, width))


def unroll(agent: Agent, params, obs: dict[str, jax.Array], carry: Carry, resets: jax.Array):
    """Runs the agent over a sequence: obs (T, B, ...), resets (T, B) -> logits (T, B, n), values (T, B), carry.

    The intake sees all T * B observations in one batch; only the LSTM steps through time.
    """
    T, B = resets.shape
    flat = jax.tree.map(lambda x: x.reshape(T * B, *x.shape[2:]), obs)
    features = agent.apply(params, flat, method=Agent.encode)
    features = features.reshape(T, B, *features.shape[1:])

    def step(carry, inputs):
        f, r = inputs
        logits, value, carry = agent.apply(params, f, carry, r, method=Agent.head)
        return carry, (logits, value)

    carry, (logits, values) = jax.lax.scan(step, carry, (features, resets))
    return logits, values, carry
