"""Envs spread over several devices along the env axis, with `jax.shard_map`.

`ShardedEnv(make_local, devices)` runs one local env of n_envs / D envs on each of D devices. Each device
steps only its own shard (the FFI kernels see only their shard; nothing is gathered), and each shard has its
own PRNG key. Every shard uses the local env's geometry assignment, so env i of every shard has the same floor
plan: with G distinct geometries and n_envs / D a multiple of G, the mix is the same as unsharded.

Several hosts: call `jax.distributed.initialize()` on each first; `jax.devices()` then lists every host's
devices, and a ShardedEnv over them spans the hosts (each host's process drives its own devices' shards).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxstep import spaces
from jaxstep.envs.base import Env, TimeStep
from jaxstep.pytree import replace

AXIS = "envs"


class ShardedEnv:
    """D copies of a local env, one per device, presented as one env of D * local.n_envs envs.

    `reset(key)` and `step(state, action)` have the contract of `jaxstep.envs.Env`; the state's arrays are
    sharded over the devices along their first axis, and its `key` holds one key per device, (D, 2).
    """

    def __init__(self, make_local: Callable[[int], Env], n_envs: int, devices: Sequence[jax.Device] | None = None):
        devices = list(jax.devices() if devices is None else devices)
        D = len(devices)
        if not isinstance(n_envs, int) or n_envs < 1 or n_envs % D:
            raise ValueError(f"n_envs: expected a positive multiple of the {D} devices, got {n_envs!r}")
        self.local = make_local(n_envs // D)
        self.devices, self.n_devices = devices, D
        self.n_envs, self.n_agents = n_envs, self.local.n_agents
        self.mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
        self.sharding = NamedSharding(self.mesh, PartitionSpec(AXIS))
        self.default_params = self.local.default_params
        spec = PartitionSpec(AXIS)

        def reset(keys, params):
            state, ts = self.local.reset(keys[0], params)
            return _with_key(state, state.key[None]), ts

        def step(state, action, params):
            state, ts = self.local.step(_with_key(state, state.key[0]), action, params)
            return _with_key(state, state.key[None]), ts

        # params are replicated; everything else is split along the env axis. check_vma is off because the FFI
        # calls' outputs carry no varying-axis types; every value here is per-device anyway.
        def per_device(f, in_specs):
            return jax.jit(jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=spec, check_vma=False))

        self._reset = per_device(reset, (spec, PartitionSpec()))
        self._step = per_device(step, (spec, spec, PartitionSpec()))

        def random_rollout(state, steps_marker, params):
            state = _with_key(state, state.key[0])

            def one(state, _):
                key, sub = jax.random.split(state.key)
                state, ts = self.local.step(_with_key(state, key), self.local.action_space.sample(sub), params)
                return state, ts.reward.mean() + sum(x.mean() for x in jax.tree.leaves(ts.obs))

            state, used = jax.lax.scan(one, state, steps_marker[0])
            return _with_key(state, state.key[None]), used[None]

        self._random_rollout = jax.jit(
            jax.shard_map(random_rollout, mesh=self.mesh, in_specs=(spec, spec, PartitionSpec()), out_specs=spec,
                          check_vma=False)
        )  # fmt: skip

    @property
    def observation_space(self) -> spaces.Dict:
        local = self.local.observation_space
        return spaces.Dict({k: dataclasses.replace(local[k], n_envs=self.n_envs) for k in local})

    @property
    def action_space(self) -> spaces.MultiDiscrete:
        return dataclasses.replace(self.local.action_space, n_envs=self.n_envs)

    def shard_keys(self, key: jax.Array) -> jax.Array:
        """(D, 2) keys, one per device, from one key."""
        return jax.device_put(jax.random.split(key, self.n_devices), self.sharding)

    def reset(self, key: jax.Array, params=None):
        params = self.default_params if params is None else params
        return self._reset(self.shard_keys(key), params)

    def step(self, state, action: jax.Array, params=None) -> tuple[object, TimeStep]:
        params = self.default_params if params is None else params
        action = jnp.asarray(action)
        if action.shape != (self.n_envs, self.n_agents):
            shape = (self.n_envs, self.n_agents)
            raise ValueError(f"action: expected shape {shape} (n_envs, n_agents), got {action.shape}")
        return self._step(state, jax.device_put(action, self.sharding), params)

    def random_rollout(self, state, steps: int, params=None):
        """`steps` steps of random actions, compiled whole on each device (for benchmarks); returns the state."""
        params = self.default_params if params is None else params
        marker = jax.device_put(jnp.zeros((self.n_devices, steps)), self.sharding)
        state, used = self._random_rollout(state, marker, params)
        return state, used

    def shard(self, tree, d: int):
        """Device d's part of a sharded state (as the local env's state) or TimeStep."""
        n = self.local.n_envs
        key = getattr(tree, "key", None)
        part = jax.tree.map(lambda x: x[d * n : (d + 1) * n], replace(tree, key=None) if key is not None else tree)
        return replace(part, key=key[d]) if key is not None else part


def _with_key(state, key):
    return replace(state, key=key)
