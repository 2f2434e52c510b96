"""Learning from a rollout: `config.epochs` passes over it in `config.minibatches` minibatches of whole streams."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxstep.agents.config import PPOConfig
from jaxstep.agents.loss import ppo_loss
from jaxstep.agents.networks import Agent
from jaxstep.agents.returns import gae
from jaxstep.agents.rollout import Transition

# the axis along which each of (rollout, carry0, bootstrap, advantages, targets) holds its B streams
STREAM_AXES = (1, 0, 0, 1, 1)


def optimiser(config: PPOConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr, eps=1e-5))


def learn(agent: Agent, config: PPOConfig, params, opt_state, key: jax.Array, rollout: Transition, carry0,
          bootstrap: jax.Array, axis_name: str | None = None):  # fmt: skip
    """(params, opt_state, metrics averaged over every minibatch) after learning from rollout (T, B, ...).

    Each epoch shuffles the B streams and splits them into minibatches (sequences stay whole, so the LSTM sees
    them in order from the carry they started with). With `axis_name`, gradients are averaged over that axis.
    """
    B = bootstrap.shape[0]
    M, size = config.minibatches, B // config.minibatches
    advantages, targets = gae(rollout.reward, rollout.value, bootstrap, rollout.discount, config.lam)
    data = (rollout, carry0, bootstrap, advantages, targets)
    opt = optimiser(config)
    grad = jax.grad(functools.partial(ppo_loss, agent, config), has_aux=True)

    def minibatch(carry, batch):
        params, opt_state = carry
        grads, metrics = grad(params, *batch)
        if axis_name:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, key):
        order = jax.random.permutation(key, B)
        # one gather per epoch into minibatch-major order, then the minibatches are plain slices
        batches = tuple(jax.tree.map(lambda x, axis=axis: _split(x, order, M, size, axis), d)
                        for d, axis in zip(data, STREAM_AXES, strict=True))  # fmt: skip
        return jax.lax.scan(minibatch, carry, batches)

    (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, config.epochs))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)


def _split(x: jax.Array, order: jax.Array, M: int, size: int, axis: int) -> jax.Array:
    """x's streams (along `axis`) in `order`, as (M, ...) minibatches of `size` streams each."""
    x = jnp.take(x, order, axis=axis)
    x = x.reshape(*x.shape[:axis], M, size, *x.shape[axis + 1 :])
    return jnp.moveaxis(x, axis, 0)
