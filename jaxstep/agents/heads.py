"""Network pieces built from spaces: intakes (observations to features) and a categorical output per agent.

Observations arrive batched as (B, ...) per key, B = n_envs * n_agents: agents share weights.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxstep import spaces


class WidthConv(nn.Module):
    """A convolution across the width with 'SAME' padding: (B, W, C) -> (B, ceil(W / stride), features).

    The parameters (`kernel` (size, C, features) and `bias`), their initialisation and the result are those of
    `nn.Conv(features, (size,), strides=stride)`; it is computed as strided slices and one matrix product, since
    XLA's CPU backend runs a convolution's gradient inside a loop (PPO's epochs and minibatches) some 40 times
    slower than outside one.
    """

    features: int
    size: int = 5
    stride: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, W, C = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.size, C, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        out = -(-W // self.stride)
        pad = max((out - 1) * self.stride + self.size - W, 0)  # split as lax's 'SAME' does
        x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        span = (out - 1) * self.stride + 1
        patches = jnp.concatenate([x[:, k : k + span : self.stride] for k in range(self.size)], -1)
        return patches @ kernel.reshape(self.size * C, self.features) + bias


class ImageIntake(nn.Module):
    """(B, H, W, C) images to (B, features): 1D convolutions across the width (rows are folded into channels).

    dtype: the dtype computations run in (parameters stay float32).
    """

    features: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        B, H, W, C = x.shape
        x = x.transpose(0, 2, 1, 3).reshape(B, W, H * C)
        # named as nn.Conv layers were, so that their parameters (and checkpoints) are unchanged
        x = nn.relu(WidthConv(32, dtype=self.dtype, name="Conv_0")(x))
        x = nn.relu(WidthConv(64, dtype=self.dtype, name="Conv_1")(x))
        return nn.relu(nn.Dense(self.features, dtype=self.dtype)(x.reshape(B, -1)))


class VectorIntake(nn.Module):
    """(B, D) vectors to (B, features)."""

    features: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(nn.Dense(self.features, dtype=self.dtype)(x))


def _intake(space: spaces.Space, features: int, dtype) -> nn.Module:
    if isinstance(space, spaces.MultiImage):
        return ImageIntake(features, dtype)
    if isinstance(space, spaces.MultiVector):
        return VectorIntake(features, dtype)
    raise TypeError(f"observation_space: no intake for {type(space).__name__}")


class Intake(nn.Module):
    """A dict of observations (B, ...) to (B, features): one intake per key, concatenated, then a dense layer."""

    observation_space: spaces.Dict
    features: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array]) -> jax.Array:
        space, f, dtype = self.observation_space, self.features, self.dtype
        parts = [_intake(space[k], f, dtype)(obs[k]) for k in sorted(space)]
        return nn.relu(nn.Dense(f, dtype=dtype)(jnp.concatenate(parts, -1)))


def sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Actions (...,) int32 drawn from categorical logits (..., n_actions)."""
    return jax.random.categorical(key, logits).astype(jnp.int32)


def log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """log pi(action) (...,) under logits (..., n_actions)."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], -1)[..., 0]


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy (...,) in nats of categorical logits (..., n_actions)."""
    logp = jax.nn.log_softmax(logits)
    return -(jnp.exp(logp) * logp).sum(-1)
