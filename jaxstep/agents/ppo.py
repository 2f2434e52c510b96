"""PPO whose rollouts and learning are one compiled program.

`make_train(config)` returns `Train(init, update, train)`: `init(key)` builds the whole training state (network
and optimiser, envs, recurrent carry, PRNG key); `update(state)` collects `config.rollout` steps from every env
and learns from them; `train(key)` runs every update inside one `lax.scan`. Each agent of each env is one stream
of experience (B = n_envs * n_agents).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxstep import envs
from jaxstep.agents import heads
from jaxstep.agents.networks import Agent, unroll
from jaxstep.agents.returns import gae, vtrace
from jaxstep.pytree import pytree_dataclass


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything a training run is built from (all static)."""

    env: str = "waypoint"
    n_envs: int = 256
    rollout: int = 32  # env steps per update
    total_steps: int = 1_000_000  # agent-steps: n_envs * n_agents * rollout per update
    lr: float = 3e-4
    clip: float = 0.2
    entropy: float = 1e-2
    value_coef: float = 0.5
    gamma: float = 0.99
    lam: float = 0.97
    epochs: int = 4
    minibatches: int = 4
    max_grad_norm: float = 0.5
    agent: str = "lstm"  # or "feedforward"
    width: int = 256
    dtype: str = "float32"  # the network's compute dtype: "float32" or "bfloat16"
    value_target: str = "gae"  # or "vtrace"
    seed: int = 0
    env_config: tuple[tuple[str, Any], ...] = ()  # extra keyword arguments for jaxstep.make
    env_params: tuple[tuple[str, Any], ...] = ()  # changes to the env's default_params

    def __post_init__(self):
        for name in ("n_envs", "rollout", "total_steps", "epochs", "minibatches", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.agent not in ("lstm", "feedforward"):
            raise ValueError(f"agent: expected 'lstm' or 'feedforward', got {self.agent!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.value_target not in ("gae", "vtrace"):
            raise ValueError(f"value_target: expected 'gae' or 'vtrace', got {self.value_target!r}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma, lam: expected gamma in (0, 1] and lam in [0, 1], got {self.gamma}, {self.lam}")

    def make_env(self) -> envs.Env:
        return envs.make(self.env, n_envs=self.n_envs, **dict(self.env_config))

    def make_env_params(self, env: envs.Env):
        return dataclasses.replace(env.default_params, **dict(self.env_params))


@pytree_dataclass
class Stats:
    """Running per-agent episode return and length (B,), plus sums over episodes that ended this update."""

    episode_return: jax.Array
    episode_length: jax.Array
    finished: jax.Array  # episodes ended this update
    finished_return: jax.Array  # their total return
    finished_length: jax.Array


@pytree_dataclass
class TrainState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: dict  # (B, ...) the agents' latest observations
    done: jax.Array  # (B,) their previous step ended an episode
    carry: Any
    key: jax.Array
    update: jax.Array  # updates done
    stats: Stats


class Transition(NamedTuple):
    obs: dict
    reset: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array  # with the value of truncated episodes' final observations folded in
    discount: jax.Array  # gamma, or 0 where the episode ended


class Train(NamedTuple):
    init: Any
    update: Any
    train: Any
    agent: Agent
    env: envs.Env  # on one device
    n_updates: int
    n_devices: int = 1
    collect: Any = None  # update's rollout half alone (one device), for measuring where the time goes


def _flat(tree, B):
    return jax.tree.map(lambda x: x.reshape(B, *x.shape[2:]), tree)


def make_train(config: PPOConfig, axis_name: str | None = None) -> Train:
    """The training functions for `config`. With `axis_name`, they run on one device of several inside
    `shard_map` over that axis: gradients are averaged and episode counts summed across devices."""
    env = config.make_env()
    params_env = config.make_env_params(env)
    A, B = env.n_agents, env.n_envs * env.n_agents
    if B % config.minibatches:
        raise ValueError(f"minibatches: must divide n_envs * n_agents = {B}, got {config.minibatches}")
    n_updates = max(1, config.total_steps // (B * config.rollout))
    agent = Agent(env.observation_space, env.action_space.n_actions, config.width, config.agent == "lstm",
                  config.dtype)  # fmt: skip
    optimiser = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr, eps=1e-5))

    def init(key, shard=0) -> TrainState:
        """`shard` (this device's index) varies the envs and actions but not the network's initial weights."""
        net_key, env_key, key = jax.random.split(key, 3)
        env_key, key = jax.random.fold_in(env_key, shard), jax.random.fold_in(key, shard)
        env_state, ts = env.reset(env_key, params_env)
        obs, carry = _flat(ts.obs, B), agent.initial_carry(B)
        params = agent.init(net_key, obs, carry, jnp.ones(B, bool))
        zero = jnp.zeros(B, jnp.float32)
        stats = Stats(zero, zero, jnp.float32(0), jnp.float32(0), jnp.float32(0))
        return TrainState(params, optimiser.init(params), env_state, obs, jnp.ones(B, bool), carry, key,
                          jnp.int32(0), stats)  # fmt: skip

    def stored(obs: dict) -> dict:
        """Observations as the rollout keeps them: in the network's dtype, which its intakes cast them to anyway
        (so bfloat16 halves the rollout's memory and changes nothing)."""
        dtype = jnp.dtype(config.dtype)
        return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, obs)

    def act(state: TrainState, _):
        key, act_key = jax.random.split(state.key)
        logits, value, carry = agent.apply(state.params, state.obs, state.carry, state.done)
        action = heads.sample(act_key, logits)
        env_state, ts = env.step(state.env_state, action.reshape(env.n_envs, A), params_env)
        reward, done = ts.reward.reshape(B), ts.done.reshape(B)
        truncated = ts.truncated.reshape(B) & ~ts.terminated.reshape(B)
        # bootstrap truncated episodes from the observation they ended on: a second pass of the network, only on
        # steps where some episode was truncated (with time limits alone, episodes end together)
        def final_value(_):
            return agent.apply(state.params, _flat(ts.final_obs, B), carry, jnp.zeros(B, bool))[1]

        bootstrap = jax.lax.cond(truncated.any(), final_value, lambda _: jnp.zeros(B, jnp.float32), None)
        reward_in = reward + config.gamma * jnp.where(truncated, jax.lax.stop_gradient(bootstrap), 0.0)
        discount = jnp.where(done, 0.0, config.gamma)
        s = state.stats
        ep_return, ep_length = s.episode_return + reward, s.episode_length + 1
        stats = Stats(
            jnp.where(done, 0.0, ep_return), jnp.where(done, 0.0, ep_length), s.finished + done.sum(),
            s.finished_return + jnp.where(done, ep_return, 0.0).sum(),
            s.finished_length + jnp.where(done, ep_length, 0.0).sum(),
        )  # fmt: skip
        log_prob = heads.log_prob(logits, action)
        transition = Transition(stored(state.obs), state.done, action, log_prob, value, reward_in, discount)
        state = dataclasses.replace(state, env_state=env_state, obs=_flat(ts.obs, B), done=done, carry=carry,
                                    key=key, stats=stats)  # fmt: skip
        return state, transition

    def loss_fn(params, batch: Transition, carry0, bootstrap, advantages, targets):
        logits, values, _ = unroll(agent, params, batch.obs, carry0, batch.reset)
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

    def learn(params, opt_state, key, rollout: Transition, carry0, bootstrap):
        advantages, targets = gae(rollout.reward, rollout.value, bootstrap, rollout.discount, config.lam)
        size = B // config.minibatches

        def epoch(carry, key):
            params, opt_state = carry
            order = jax.random.permutation(key, B).reshape(config.minibatches, size)

            def minibatch(carry, rows):
                params, opt_state = carry
                pick = (
                    jax.tree.map(lambda x: x[:, rows], rollout), jax.tree.map(lambda x: x[rows], carry0),
                    bootstrap[rows], advantages[:, rows], targets[:, rows],
                )  # fmt: skip
                grads, metrics = jax.grad(loss_fn, has_aux=True)(params, *pick)
                if axis_name:
                    grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
                updates, opt_state = optimiser.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), metrics

            return jax.lax.scan(minibatch, (params, opt_state), order)

        (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, config.epochs))
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    def collect(state: TrainState) -> tuple[TrainState, Transition, Any, jax.Array]:
        """config.rollout steps of every env: the state after them, the transitions (T, B, ...), the carry they
        started from and the values (B,) of the observations they ended on."""
        carry0 = state.carry
        state, rollout = jax.lax.scan(act, state, None, length=config.rollout)
        _, bootstrap, _ = agent.apply(state.params, state.obs, state.carry, state.done)
        return state, rollout, carry0, bootstrap

    def update(state: TrainState) -> tuple[TrainState, dict]:
        state, rollout, carry0, bootstrap = collect(state)
        key, learn_key = jax.random.split(state.key)
        params, opt_state, metrics = learn(state.params, state.opt_state, learn_key, rollout, carry0, bootstrap)
        s = state.stats
        finished, total_return, total_length = s.finished, s.finished_return, s.finished_length
        reward = rollout.reward.mean()
        if axis_name:
            finished, total_return, total_length = jax.lax.psum((finished, total_return, total_length), axis_name)
            reward = jax.lax.pmean(reward, axis_name)
        count = jnp.maximum(finished, 1)
        metrics = dict(metrics, episodes=finished, reward=reward,
                       episode_return=jnp.where(finished > 0, total_return / count, jnp.nan),
                       episode_length=jnp.where(finished > 0, total_length / count, jnp.nan))  # fmt: skip
        zero = jnp.float32(0)
        stats = dataclasses.replace(s, finished=zero, finished_return=zero, finished_length=zero)
        state = dataclasses.replace(state, params=params, opt_state=opt_state, key=key, update=state.update + 1,
                                    stats=stats)  # fmt: skip
        return state, metrics

    def train(key) -> tuple[TrainState, dict]:
        return jax.lax.scan(lambda s, _: update(s), init(key), None, length=n_updates)

    return Train(init, update, train, agent, env, n_updates, collect=collect)


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
