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
    """

    observation_space: spaces.Dict
    n_actions: int
    width: int = 256
    recurrent: bool = True
    dtype: str = "float32"

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array], carry: Carry, reset: jax.Array):
        dtype = jnp.dtype(self.dtype)
        x = Intake(self.observation_space, self.width, dtype)(obs)
        if self.recurrent:
            carry = jax.tree.map(lambda c: jnp.where(reset[:, None], 0.0, c), carry)
            carry, x = nn.OptimizedLSTMCell(self.width, dtype=dtype)(carry, x)
            carry = jax.tree.map(lambda c: c.astype(jnp.float32), carry)
        x = x.astype(jnp.float32)
        logits = nn.Dense(self.n_actions, kernel_init=nn.initializers.orthogonal(0.01))(x)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(x)[..., 0]
        return logits, value, carry

    def initial_carry(self, batch: int) -> Carry:
        width = self.width if self.recurrent else 1  # unused, but checkpoints cannot hold empty arrays
        return jnp.zeros((batch, width)), jnp.zeros((batch, width))


def unroll(agent: Agent, params, obs: dict[str, jax.Array], carry: Carry, resets: jax.Array):
    """Runs the agent over a sequence: obs (T, B, ...), resets (T, B) -> logits (T, B, n), values (T, B), carry."""

    def step(carry, inputs):
        o, r = inputs
        logits, value, carry = agent.apply(params, o, carry, r)
        return carry, (logits, value)

    carry, (logits, values) = jax.lax.scan(step, carry, (obs, resets))
    return logits, values, carry
