"""Deathmatch: agents shoot whoever is in the middle of their view; health, damage and respawns."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, modules, spaces
from jaxstep.envs.base import (
    BaseState,
    Env,
    check_backend,
    check_camera,
    check_count,
    check_geometries,
    default_floorplans,
    world,
)
from jaxstep.ffi.types import MODEL_LINES
from jaxstep.pytree import pytree_dataclass, replace

CLEARANCE = 1.0  # metres beyond the map's extent before an agent counts as outside


@pytree_dataclass
class DeathmatchParams:
    accel: float = 5.0  # metres per second squared
    ang_accel: float = 180.0  # degrees per second squared
    decay: float = 0.125  # fraction of velocity lost each step
    damage: float = 0.05  # health lost per hit taken
    decline: float = 0.001  # health lost every step
    outside: float = 0.05  # health lost per step outside the map


@pytree_dataclass
class DeathmatchState(BaseState):
    health: jax.Array  # (n_envs, n_agents) in (0, 1]
    damage: jax.Array  # (n_envs, n_agents) damage dealt since the last respawn
    hits: jax.Array  # (n_envs, n_agents, n_agents) bool, shooter a hit agent o on the last step


class Deathmatch(Env):
    """n_agents agents per env (default 4) in procedural floor plans (or `geometries`).

    An opponent under the middle two columns of an agent's view is hit, losing `damage` health. Health also falls
    by `decline` each step, and by `outside` each step off the map; at 0 an agent respawns.

    obs: rgb (n_envs, n_agents, 1, res // subsample, 3) and depth (..., 1) in [0, 1]; imu (n_envs, n_agents, 3);
    health (n_envs, n_agents, 1). action: (n_envs, n_agents) in [0, 7). reward: (n_envs, n_agents), opponents hit
    this step. terminated: (n_envs, n_agents), the agent's health ran out. truncated: never.
    """

    def __init__(self, n_envs: int = 1, n_agents: int = 4, geometries=None, res: int = 512, subsample: int = 4,
                 fov: float = 70.0, fps: float = 10.0, seed: int = 0, backend: str = "ffi"):  # fmt: skip
        self.n_envs, self.n_agents = check_count("n_envs", n_envs), check_count("n_agents", n_agents, 64)
        self.res, self.subsample = check_count("res", res), check_count("subsample", subsample)
        if res % subsample or res // subsample < 2:
            raise ValueError(f"subsample: must divide res ({res}) leaving at least 2 pixels, got {subsample}")
        (self.fov, self.fps), self.backend = check_camera(fov, fps), check_backend(backend)
        geometries = check_geometries(geometries, n_envs, default_floorplans(n_envs, seed))
        self.scenery, self.spawns = world(geometries, self.n_agents, seed, backend)
        extent = np.array([np.asarray(g["masks"]).shape[::-1] for g in geometries]) * [[g["res"]] for g in geometries]
        self._extent = jnp.asarray(extent, jnp.float32)  # (n_envs, 2) width, height in metres
        n, A, w = n_envs, self.n_agents, res // subsample
        self.observation_space = spaces.Dict(
            rgb=spaces.MultiImage(n, A, 1, w, 3),
            depth=spaces.MultiImage(n, A, 1, w, 1),
            imu=spaces.MultiVector(n, A, 3),
            health=spaces.MultiVector(n, A, 1),
        )
        self.action_space = spaces.MultiDiscrete(n, A, modules.N_ACTIONS)
        self.default_params = DeathmatchParams()

    def _init(self, key, params):
        key, sub = jax.random.split(key)
        n, A = self.n_envs, self.n_agents
        zero = jnp.zeros((n, A), jnp.float32)
        state = DeathmatchState(
            agents=core.agents(n, A), key=key, time=jnp.zeros((n, A), jnp.int32),
            health=zero + 1, damage=zero, hits=jnp.zeros((n, A, A), bool),
        )  # fmt: skip
        return self._respawn(state, jnp.ones((n, A), bool), sub, params)

    def _respawn(self, state, mask, key, params):
        state = self._spawn(state, mask, key)
        return replace(state, health=jnp.where(mask, 1.0, state.health), damage=jnp.where(mask, 0.0, state.damage))

    def _move(self, state, actions, params):
        return self._momentum(state, actions, params)

    def _observe(self, state, params, only=None):
        view = core.observe(self.scenery, state.agents, self.res, self.fov, self.backend, mask=only,
                            subsample=self.subsample, outputs=("rgb", "depth", "indices"))  # fmt: skip
        obs = dict(rgb=view.rgb, depth=view.depth, imu=modules.imu(state.agents), health=state.health[..., None])
        return obs, self._targets(view.indices)

    def _refresh(self, obs, state):
        return dict(obs, health=state.health[..., None])

    def _targets(self, indices) -> jax.Array:
        """(n_envs, n_agents, n_agents) bool: agent o is under the middle two columns of agent a's view.

        indices: (n_envs, n_agents, res // subsample), the line under each column's middle ray."""
        w = self.res // self.subsample
        middle = indices[..., w // 2 - 1 : w // 2 + 1]
        target = jnp.where((middle >= 0) & (middle < self.n_agents * MODEL_LINES), middle // MODEL_LINES, -1)
        return (target[:, :, None, :] == jnp.arange(self.n_agents)[None, None, :, None]).any(-1)

    def _outcome(self, state, hits, params):
        dealt = hits.sum(2).astype(jnp.float32)
        taken = hits.sum(1).astype(jnp.float32)
        p = state.agents.positions
        outside = ((p < -CLEARANCE) | (p > self._extent[:, None] + CLEARANCE)).any(-1)
        health = state.health - params.damage * taken - params.outside * outside - params.decline
        terminated = health <= 0
        state = replace(state, health=health, damage=state.damage + params.damage * dealt, hits=hits)
        return state, dealt, terminated, jnp.zeros_like(terminated)
