"""Agents: an intake, an optional LSTM (reset where episodes end), a policy head and a value head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstep import spaces
from jaxstep.agents.heads import Intake

Carry = tuple[jax.Array, jax.Array]  # LSTM (c, h), each (B, width); unused (B, 1) zeros for feed-forward agents


def lstm_step(w_hidden: jax.Array, carry: Carry, projected: jax.Array, reset: jax.Array) -> tuple[Carry, jax.Array]:
    """One LSTM step: (carry, h) from carry (c, h) (B, H) float32, the input's projection (B, 4H) (gates i, f, g, o,
    bias included) and reset (B,) bool, which zeroes the carry first. w_hidden: (H, 4H), in the compute dtype."""
    c, h = jax.tree.map(lambda x: jnp.where(reset[:, None], 0.0, x), carry)
    gates = projected.astype(jnp.float32) + jnp.dot(h.astype(w_hidden.dtype), w_hidden,
                                                    preferred_element_type=jnp.float32)  # fmt: skip
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class Agent(nn.Module):
    """Maps observations (B, ...) to (logits (B, n_actions), value (B,), carry).

    recurrent: an LSTM of `width` units after the intake; its carry is zeroed for rows where `reset` (B,) is true.
    dtype: the dtype the layers compute in ("bfloat16" halves memory traffic and uses tensor cores); parameters,
        the LSTM carry and gates, logits and values stay float32.

    Its parts, for `unroll`: `encode` (intake, and the LSTM's input projection: everything that needs no memory,
    run over a whole sequence at once), `recur` (the LSTM's step, the only part that goes step by step) and
    `outputs` (the heads, again over the whole sequence).
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
            # the LSTM's input weights and bias, and its recurrent weights (flax's LSTM initialisers)
            self.lstm_input = nn.Dense(4 * self.width, dtype=dtype)
            self.lstm_hidden = self.param("lstm_hidden", nn.initializers.orthogonal(), (self.width, 4 * self.width))
        self.policy = nn.Dense(self.n_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.critic = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))

    def __call__(self, obs: dict[str, jax.Array], carry: Carry, reset: jax.Array):
        carry, h = self.recur(carry, self.encode(obs), reset)
        return (*self.outputs(h), carry)

    def encode(self, obs: dict[str, jax.Array]) -> jax.Array:
        """(B, 4 * width) LSTM input projections of observations (B, ...); (B, width) features if feed-forward."""
        x = self.intake(obs)
        return self.lstm_input(x) if self.recurrent else x

    def recur(self, carry: Carry, encoded: jax.Array, reset: jax.Array) -> tuple[Carry, jax.Array]:
        """(carry, h (B, width)): one LSTM step from `encode`'s output; the identity if feed-forward."""
        if not self.recurrent:
            return carry, encoded
        return lstm_step(self.lstm_hidden.astype(jnp.dtype(self.dtype)), carry, encoded, reset)

    def outputs(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(logits (..., n_actions), value (...)) float32 from the LSTM's output (..., width)."""
        h = h.astype(jnp.float32)
        return self.policy(h), self.critic(h)[..., 0]

    def initial_carry(self, batch: int) -> Carry:
        width = self.width if self.recurrent else 1  # unused, but checkpoints cannot hold empty arrays
        return jnp.zeros((batch, width)), jnp.zeros((batch, width))


def unroll(agent: Agent, params, obs: dict[str, jax.Array], carry: Carry, resets: jax.Array, steps: int = 8):
    """Runs the agent over a sequence: obs (T, B, ...), resets (T, B) -> logits (T, B, n), values (T, B), carry.

    Everything but the LSTM's recurrence sees all T * B observations in one batch; the recurrence alone steps
    through time, `steps` steps to a loop iteration (fewer, longer iterations: less loop overhead on a GPU).
    """
    T, B = resets.shape
    flat = jax.tree.map(lambda x: x.reshape(T * B, *x.shape[2:]), obs)
    encoded = agent.apply(params, flat, method=Agent.encode)
    if agent.recurrent:
        w_hidden = params["params"]["lstm_hidden"].astype(jnp.dtype(agent.dtype))
        encoded = encoded.reshape(T, B, -1)

        def step(carry, inputs):
            return lstm_step(w_hidden, carry, *inputs)

        carry, hs = jax.lax.scan(step, carry, (encoded, resets), unroll=max(1, min(steps, T)))
    else:
        hs = encoded.reshape(T, B, -1)
    logits, values = agent.apply(params, hs, method=Agent.outputs)
    return logits, values, carry
