"""PPO's clipped surrogate loss over one minibatch of sequences."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxstep.agents import heads
from jaxstep.agents.config import PPOConfig
from jaxstep.agents.networks import Agent, unroll
from jaxstep.agents.returns import vtrace
from jaxstep.agents.rollout import Transition


def ppo_loss(agent: Agent, config: PPOConfig, params, batch: Transition, carry0, bootstrap: jax.Array,
             advantages: jax.Array, targets: jax.Array) -> tuple[jax.Array, dict]:  # fmt: skip
    """(loss, metrics) for a minibatch of S streams: batch (T, S, ...), the carry the sequences started from,
    bootstrap (S,) values after them, and GAE advantages and value targets (T, S) (replaced by v-trace's,
    recomputed under `params`, when config.value_target is "vtrace"). Advantages are normalised per minibatch."""
    logits, values, _ = unroll(agent, params, batch.obs, carry0, batch.reset, config.unroll)
    log_prob = heads.log_prob(logits, batch.action)
    log_ratio = log_prob - batch.log_prob
    if config.value_target == "vtrace":
        advantages, targets = vtrace(batch.reward, jax.lax.stop_gradient(values), bootstrap, batch.discount,
                                     jax.lax.stop_gradient(log_ratio), config.lam)  # fmt: skip
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1 - config.clip, 1 + config.clip)
    policy_loss = -jnp.minimum(ratio * advantages, clipped * advantages).mean()
    value_loss = 0.5 * ((values - targets) ** 2).mean()
    entropy = heads.entropy(logits).mean()
    loss = policy_loss + config.value_coef * value_loss - config.entropy * entropy
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return loss, dict(loss=loss, policy_loss=policy_loss, value_loss=value_loss, entropy=entropy,
                      approx_kl=approx_kl)  # fmt: skip
