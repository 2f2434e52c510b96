"""Advantage and value-target estimators over time-major rollouts (T, B)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards, values, bootstrap, discounts, lam: float):
    """Generalised advantage estimates and returns.

    rewards, values, discounts: (T, B); discounts[t] is gamma, or 0 where the episode ended after step t.
    bootstrap: (B,) value of the state after the last step. Returns (advantages, targets), each (T, B).
    """
    next_values = jnp.concatenate([values[1:], bootstrap[None]])
    deltas = rewards + discounts * next_values - values

    def back(carry, x):
        delta, discount = x
        carry = delta + discount * lam * carry
        return carry, carry

    _, advantages = jax.lax.scan(back, jnp.zeros_like(bootstrap), (deltas, discounts), reverse=True)
    return advantages, advantages + values


def vtrace(rewards, values, bootstrap, discounts, log_rhos, lam: float = 1.0, clip_rho: float = 1.0,
           clip_pg_rho: float = 1.0):  # fmt: skip
    """V-trace value targets and policy-gradient advantages (Espeholt et al. 2018), with a lambda.

    log_rhos: (T, B) log(pi(a) / mu(a)) of the target policy over the behaviour policy.
    Returns (pg_advantages, targets), each (T, B).
    """
    rhos = jnp.exp(log_rhos)
    clipped = jnp.minimum(clip_rho, rhos)
    cs = lam * jnp.minimum(1.0, rhos)
    next_values = jnp.concatenate([values[1:], bootstrap[None]])
    deltas = clipped * (rewards + discounts * next_values - values)

    def back(carry, x):
        delta, discount, c = x
        carry = delta + discount * c * carry
        return carry, carry

    _, corrections = jax.lax.scan(back, jnp.zeros_like(bootstrap), (deltas, discounts, cs), reverse=True)
    targets = values + corrections
    next_targets = jnp.concatenate([targets[1:], bootstrap[None]])
    pg_advantages = jnp.minimum(clip_pg_rho, rhos) * (rewards + discounts * next_targets - values)
    return pg_advantages, targets
