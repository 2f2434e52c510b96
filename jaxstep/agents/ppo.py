"""PPO whose rollouts and learning are one compiled program, composed from its parts.

`config` (what a run is built from), `rollout` (acting: `collect`), `loss` (`ppo_loss`) and `learn` (epochs of
minibatches) are each small pure functions; `make_train(config)` binds them to one env and agent and returns
`Train(init, update, train, ...)`: `init(key)` builds the whole training state (network and optimiser, envs,
recurrent carry, PRNG key); `update(state)` collects `config.rollout` steps from every env and learns from them;
`train(key)` runs every update inside one `lax.scan`. Each agent of each env is one stream of experience
(B = n_envs * n_agents).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxstep import envs
from jaxstep.agents import learn as learning
from jaxstep.agents import rollout
from jaxstep.agents.config import PPOConfig
from jaxstep.agents.networks import Agent
from jaxstep.agents.rollout import Actor, Transition
from jaxstep.pytree import pytree_dataclass

__all__ = ["PPOConfig", "Train", "TrainState", "make_sharded_train", "make_train", "steps_per_update"]


@pytree_dataclass
class TrainState:
    params: Any
    opt_state: Any
    actor: Actor  # the envs, the agents' latest observations and memory, the PRNG key and episode stats
    update: jax.Array  # () int32: updates done


class Train(NamedTuple):
    init: Callable  # key (, shard) -> TrainState
    update: Callable  # TrainState -> (TrainState, metrics)
    train: Callable  # key -> (TrainState, metrics (n_updates,) each)
    agent: Agent
    env: envs.Env  # on one device
    n_updates: int
    n_devices: int = 1
    collect: Callable | None = None  # update's rollout half alone (one device): TrainState -> see `rollout.collect`


def make_agent(config: PPOConfig, env: envs.Env) -> Agent:
    return Agent(env.observation_space, env.action_space.n_actions, config.width, config.agent == "lstm",
                 config.dtype)  # fmt: skip


def make_train(config: PPOConfig, axis_name: str | None = None) -> Train:
    """The training functions for `config`. With `axis_name`, they run on one device of several inside
    `shard_map` over that axis: gradients are averaged and episode counts summed across devices."""
    env = config.make_env()
    env_params = config.make_env_params(env)
    B = env.n_envs * env.n_agents
    if B % config.minibatches:
        raise ValueError(f"minibatches: must divide n_envs * n_agents = {B}, got {config.minibatches}")
    n_updates = max(1, config.total_steps // (B * config.rollout))
    agent = make_agent(config, env)
    optimiser = learning.optimiser(config)

    def init(key: jax.Array, shard: int | jax.Array = 0) -> TrainState:
        """`shard` (this device's index) varies the envs and actions but not the network's initial weights."""
        net_key, env_key, key = jax.random.split(key, 3)
        env_key, key = jax.random.fold_in(env_key, shard), jax.random.fold_in(key, shard)
        env_state, ts = env.reset(env_key, env_params)
        obs, carry, reset = rollout.flat(ts.obs, B), agent.initial_carry(B), jnp.ones(B, bool)
        params = agent.init(net_key, obs, carry, reset)
        actor = Actor(env_state, obs, reset, carry, key, rollout.empty_stats(B))
        return TrainState(params, optimiser.init(params), actor, jnp.int32(0))

    def collect(state: TrainState) -> tuple[Actor, Transition, Any, jax.Array]:
        return rollout.collect(env, env_params, agent, state.params, config.gamma, config.dtype, config.rollout,
                               state.actor)  # fmt: skip

    def update(state: TrainState) -> tuple[TrainState, dict]:
        actor, transitions, carry0, bootstrap = collect(state)
        key, learn_key = jax.random.split(actor.key)
        params, opt_state, metrics = learning.learn(agent, config, state.params, state.opt_state, learn_key,
                                                    transitions, carry0, bootstrap, axis_name)  # fmt: skip
        metrics = dict(metrics, **episode_metrics(actor.stats, transitions.reward, axis_name))
        actor = rollout.reset_counts(dataclasses.replace(actor, key=key))
        return TrainState(params, opt_state, actor, state.update + 1), metrics

    def train(key: jax.Array) -> tuple[TrainState, dict]:
        return jax.lax.scan(lambda s, _: update(s), init(key), None, length=n_updates)

    return Train(init, update, train, agent, env, n_updates, collect=collect)


def episode_metrics(stats: rollout.Stats, reward: jax.Array, axis_name: str | None = None) -> dict:
    """This update's episodes: how many ended, their mean return and length (NaN where none ended), and the mean
    reward per step, over every device of `axis_name`."""
    finished, total_return, total_length = stats.finished, stats.finished_return, stats.finished_length
    reward = reward.mean()
    if axis_name:
        finished, total_return, total_length = jax.lax.psum((finished, total_return, total_length), axis_name)
        reward = jax.lax.pmean(reward, axis_name)
    count = jnp.maximum(finished, 1)
    return dict(episodes=finished, reward=reward,
                episode_return=jnp.where(finished > 0, total_return / count, jnp.nan),
                episode_length=jnp.where(finished > 0, total_length / count, jnp.nan))  # fmt: skip


def make_sharded_train(config: PPOConfig, devices=None) -> Train:
    """Data-parallel training over `devices` (default: all): each runs config.n_envs / D envs and the gradients
    are averaged. Every leaf of the TrainState gets a leading device axis, split over the devices (the network's
    copies stay equal, as every device applies the same averaged gradients)."""
    from jax.sharding import Mesh, PartitionSpec

    devices = list(jax.devices() if devices is None else devices)
    D = len(devices)
    if config.n_envs % D:
        raise ValueError(f"n_envs: expected a multiple of the {D} devices, got {config.n_envs}")
    local = dataclasses.replace(config, n_envs=config.n_envs // D, total_steps=config.total_steps // D)
    axis = "devices"
    t = make_train(local, axis_name=axis)
    mesh, spec = Mesh(devices, (axis,)), PartitionSpec(axis)

    def per_device(f, in_specs):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)

    def add_axis(tree):
        return jax.tree.map(lambda x: x[None], tree)

    def drop_axis(tree):
        return jax.tree.map(lambda x: x[0], tree)

    sharded_init = per_device(lambda key: add_axis(t.init(key, jax.lax.axis_index(axis))), PartitionSpec())
    sharded_update = per_device(lambda state: add_axis(t.update(drop_axis(state))), spec)

    def update(state):
        state, metrics = sharded_update(state)
        return state, drop_axis(metrics)  # the same on every device

    def train(key):
        return jax.lax.scan(lambda s, _: update(s), sharded_init(key), None, length=t.n_updates)

    return Train(sharded_init, update, train, t.agent, t.env, t.n_updates, D)


def steps_per_update(config: PPOConfig, env: envs.Env) -> int:
    """Agent-steps collected by one update."""
    return env.n_envs * env.n_agents * config.rollout
