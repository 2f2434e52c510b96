"""Collecting experience: the agent acts in every env for `config.rollout` steps, keeping what learning needs.

Each agent of each env is one stream of experience (B = n_envs * n_agents); arrays are (B, ...) per step and
(T, B, ...) over a rollout of T steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxstep.agents import heads
from jaxstep.agents.networks import Agent
from jaxstep.pytree import pytree_dataclass


@pytree_dataclass
class Stats:
    """Running per-agent episode return and length (B,), plus sums over episodes that ended this update."""

    episode_return: jax.Array
    episode_length: jax.Array
    finished: jax.Array  # () episodes ended this update
    finished_return: jax.Array  # () their total return
    finished_length: jax.Array  # () their total length, steps


@pytree_dataclass
class Actor:
    """What acting carries from step to step: the envs, the agents' latest observations and memory."""

    env_state: Any
    obs: dict  # (B, ...) the agents' latest observations
    done: jax.Array  # (B,) bool: their previous step ended an episode (the memory is reset before this one)
    carry: Any  # the agent's recurrent state, (B, width) leaves
    key: jax.Array
    stats: Stats


class Transition(NamedTuple):
    """One step of every stream, (B, ...) each; stacked over a rollout, (T, B, ...)."""

    obs: dict  # as the network saw it, in its dtype
    reset: jax.Array  # bool: the memory was reset before this step
    action: jax.Array  # int32
    log_prob: jax.Array  # log pi(action) under the acting parameters
    value: jax.Array
    reward: jax.Array  # with gamma * the value of a truncated episode's final observation folded in
    discount: jax.Array  # gamma, or 0 where the episode ended


def flat(tree, B: int):
    """(n_envs, n_agents, ...) leaves to (B, ...)."""
    return jax.tree.map(lambda x: x.reshape(B, *x.shape[2:]), tree)


def empty_stats(B: int) -> Stats:
    zero = jnp.zeros(B, jnp.float32)
    return Stats(zero, zero, jnp.float32(0), jnp.float32(0), jnp.float32(0))


def stored(obs: dict, dtype: str) -> dict:
    """Observations as the rollout keeps them: floats in the network's dtype, which its intakes cast them to
    anyway (so bfloat16 halves the rollout's memory and changes nothing)."""
    dtype = jnp.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, obs)


def tally(stats: Stats, reward: jax.Array, done: jax.Array) -> Stats:
    """Stats after a step's rewards and episode ends, (B,) each."""
    ep_return, ep_length = stats.episode_return + reward, stats.episode_length + 1
    return Stats(
        jnp.where(done, 0.0, ep_return), jnp.where(done, 0.0, ep_length), stats.finished + done.sum(),
        stats.finished_return + jnp.where(done, ep_return, 0.0).sum(),
        stats.finished_length + jnp.where(done, ep_length, 0.0).sum(),
    )  # fmt: skip


def act(env, env_params, agent: Agent, params, gamma: float, dtype: str, actor: Actor) -> tuple[Actor, Transition]:
    """One step of every env under the agent's policy: the next Actor and the step's Transition."""
    B = actor.done.shape[0]
    key, act_key = jax.random.split(actor.key)
    logits, value, carry = agent.apply(params, actor.obs, actor.carry, actor.done)
    action = heads.sample(act_key, logits)
    env_state, ts = env.step(actor.env_state, action.reshape(env.n_envs, env.n_agents), env_params)
    reward, done = ts.reward.reshape(B), ts.done.reshape(B)
    truncated = ts.truncated.reshape(B) & ~ts.terminated.reshape(B)

    # bootstrap truncated episodes from the observation they ended on: a second pass of the network, only on
    # steps where some episode was truncated (with time limits alone, episodes end together)
    def final_value(_):
        return agent.apply(params, flat(ts.final_obs, B), carry, jnp.zeros(B, bool))[1]

    bootstrap = jax.lax.cond(truncated.any(), final_value, lambda _: jnp.zeros(B, jnp.float32), None)
    reward_in = reward + gamma * jnp.where(truncated, jax.lax.stop_gradient(bootstrap), 0.0)
    discount = jnp.where(done, 0.0, gamma)
    transition = Transition(stored(actor.obs, dtype), actor.done, action, heads.log_prob(logits, action), value,
                            reward_in, discount)  # fmt: skip
    actor = Actor(env_state, flat(ts.obs, B), done, carry, key, tally(actor.stats, reward, done))
    return actor, transition


def collect(env, env_params, agent: Agent, params, gamma: float, dtype: str, steps: int,
            actor: Actor) -> tuple[Actor, Transition, Any, jax.Array]:  # fmt: skip
    """`steps` steps of every env: the Actor after them, the transitions (T, B, ...), the carry they started from
    and the values (B,) of the observations they ended on."""

    def step(actor, _):
        return act(env, env_params, agent, params, gamma, dtype, actor)

    carry0 = actor.carry
    actor, rollout = jax.lax.scan(step, actor, None, length=steps)
    _, bootstrap, _ = agent.apply(params, actor.obs, actor.carry, actor.done)
    return actor, rollout, carry0, bootstrap


def reset_counts(actor: Actor) -> Actor:
    """The Actor with this update's episode sums zeroed (the running returns and lengths kept)."""
    zero = jnp.float32(0)
    stats = dataclasses.replace(actor.stats, finished=zero, finished_return=zero, finished_length=zero)
    return dataclasses.replace(actor, stats=stats)
