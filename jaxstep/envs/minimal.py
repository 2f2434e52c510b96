"""Minimal: one agent in a box, seeing RGB, moving without momentum. No reward; episodes are cut at max_length."""

import jax
import jax.numpy as jnp

from jaxstep import core, modules, spaces, toys
from jaxstep.envs.base import BaseState, Env, check_backend, check_camera, check_count, world
from jaxstep.pytree import pytree_dataclass


@pytree_dataclass
class MinimalParams:
    max_length: int = 256  # steps per episode
    speed: float = 10.0  # metres per second
    ang_speed: float = 180.0  # degrees per second


class Minimal(Env):
    """obs: rgb (n_envs, 1, 1, res, 3) in [0, 1]. action: (n_envs, 1) in [0, 7). reward: always 0.
    terminated: never. truncated: after max_length steps, when the agent respawns in its box."""

    def __init__(self, n_envs: int = 1, res: int = 64, fov: float = 130.0, fps: float = 10.0, seed: int = 0,
                 backend: str = "ffi"):  # fmt: skip
        self.n_envs, self.n_agents = check_count("n_envs", n_envs), 1
        self.res, self.backend = check_count("res", res), check_backend(backend)
        self.fov, self.fps = check_camera(fov, fps)
        self.scenery, self.spawns = world([toys.box()] * n_envs, 1, seed, backend)
        self.observation_space = spaces.Dict(rgb=spaces.MultiImage(n_envs, 1, 1, res, 3))
        self.action_space = spaces.MultiDiscrete(n_envs, 1, modules.N_ACTIONS)
        self.default_params = MinimalParams()

    def _init(self, key, params):
        key, sub = jax.random.split(key)
        state = BaseState(core.agents(self.n_envs, 1), key, jnp.zeros((self.n_envs, 1), jnp.int32))
        return self._respawn(state, jnp.ones((self.n_envs, 1), bool), sub, params)

    def _respawn(self, state, mask, key, params):
        return self._spawn(state, mask, key)

    def _move(self, state, actions, params):
        return self._physics(state, modules.simple_movement(state.agents, actions, self.fps, params.speed,
                                                            params.ang_speed))  # fmt: skip

    def _observe(self, state, params, only=None):
        view = core.observe(self.scenery, state.agents, self.res, self.fov, self.backend, mask=only, outputs=("rgb",))
        return dict(rgb=view.rgb), None

    def _outcome(self, state, events, params):
        zero = jnp.zeros((self.n_envs, 1), jnp.float32)
        return state, zero, zero > 0, state.time >= params.max_length
