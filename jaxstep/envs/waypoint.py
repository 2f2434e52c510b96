"""Waypoint: reach a goal marker; reward 1 on arrival, then a new goal. Quick to learn, for testing trainers."""

import jax
import jax.numpy as jnp

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
from jaxstep.pytree import pytree_dataclass, replace

CANDIDATES = 16  # spawn points considered for each new goal


@pytree_dataclass
class WaypointParams:
    accel: float = 5.0  # metres per second squared
    ang_accel: float = 180.0  # degrees per second squared
    decay: float = 0.125  # fraction of velocity lost each step
    goal_distance: float = 1.5  # metres: new goals are placed about this far from the agent
    arrival: float = 0.3  # metres between centres that counts as arriving (touching is 0.212)
    max_length: int = 256  # steps per episode


@pytree_dataclass
class WaypointState(BaseState):
    arrived: jax.Array  # (n_envs, 1) bool, reached a goal on the last move


class Waypoint(Env):
    """One agent per env and a goal marker, drawn as a second (motionless) agent model the agent can see.

    obs: rgb (n_envs, 1, 1, res, 3) and depth (n_envs, 1, 1, res, 1) in [0, 1]; imu (n_envs, 1, 3); waypoint
    (n_envs, 1, 2), the goal in metres in the agent's frame (x forward, y left).
    action: (n_envs, 1) in [0, 7). reward: (n_envs, 1), 1 on arriving within `arrival` of the goal.
    terminated: never. truncated: after max_length steps.
    """

    def __init__(self, n_envs: int = 1, geometries=None, res: int = 64, fov: float = 130.0, fps: float = 10.0,
                 seed: int = 0, backend: str = "ffi"):  # fmt: skip
        self.n_envs, self.n_agents = check_count("n_envs", n_envs), 1
        self.res, self.backend = check_count("res", res), check_backend(backend)
        self.fov, self.fps = check_camera(fov, fps)
        geometries = check_geometries(geometries, n_envs, default_floorplans(n_envs, seed))
        # agent 1 of the scenery is the goal marker
        self.scenery, self.spawns = world(geometries, 2, seed, backend)
        self.observation_space = spaces.Dict(
            rgb=spaces.MultiImage(n_envs, 1, 1, res, 3),
            depth=spaces.MultiImage(n_envs, 1, 1, res, 1),
            imu=spaces.MultiVector(n_envs, 1, 3),
            waypoint=spaces.MultiVector(n_envs, 1, 2),
        )
        self.action_space = spaces.MultiDiscrete(n_envs, 1, modules.N_ACTIONS)
        self.default_params = WaypointParams()

    def _init(self, key, params):
        key, sub = jax.random.split(key)
        n = self.n_envs
        no = jnp.zeros((n, 1), bool)
        state = WaypointState(core.agents(n, 2), key, jnp.zeros((n, 1), jnp.int32), no)
        return self._respawn(state, ~no, sub, params)

    def _respawn(self, state, mask, key, params):
        spawn, goal = jax.random.split(key)
        both = jnp.concatenate([mask, mask], 1)
        agents = modules.respawn(state.agents, self.spawns, self.scenery.env_geometry, both, spawn)
        agents = self._new_goal(agents, mask[:, 0], goal, params)
        return replace(state, agents=agents, time=jnp.where(mask, 0, state.time), arrived=state.arrived & ~mask)

    def _new_goal(self, agents, where, key, params):
        """Moves the marker of envs `where` (n_envs,) to the candidate spawn nearest goal_distance from the agent."""
        choice = jax.random.randint(key, (self.n_envs, CANDIDATES), 0, self.spawns.positions.shape[1])
        candidates = self.spawns.positions[self.scenery.env_geometry[:, None], choice]  # (n, K, 2)
        d = jnp.linalg.norm(candidates - agents.positions[:, :1], axis=-1)
        best = jnp.argmin(jnp.abs(jnp.log((d + 1e-3) / params.goal_distance)), -1)
        goal = candidates[jnp.arange(self.n_envs), best]
        positions = agents.positions.at[:, 1].set(jnp.where(where[:, None], goal, agents.positions[:, 1]))
        return replace(agents, positions=positions)

    def _move(self, state, actions, params):
        a = state.agents
        moved = modules.momentum_movement(a, jnp.concatenate([actions, jnp.zeros_like(actions)], 1), self.fps,
                                          params.accel, params.ang_accel, params.decay)  # fmt: skip
        # the marker never moves
        moved = replace(moved, velocity=moved.velocity.at[:, 1].set(0.0), angvelocity=moved.angvelocity.at[:, 1].set(0))
        moved, _ = core.physics(self.scenery, moved, self.fps, self.backend)
        arrived = jnp.linalg.norm(moved.positions[:, 0] - moved.positions[:, 1], axis=-1) < params.arrival
        key, sub = jax.random.split(state.key)
        moved = self._new_goal(moved, arrived, sub, params)
        return replace(state, agents=moved, key=key, time=state.time + 1, arrived=arrived[:, None])

    def _observe(self, state, params, only=None):
        # the marker (agent 1) is seen, but its own view is not rendered
        only = None if only is None else only[:, :1]
        view = core.observe(self.scenery, state.agents, self.res, self.fov, self.backend, n_viewers=1, mask=only,
                            outputs=("rgb", "depth"))
        learner = jax.tree.map(lambda x: x[:, :1], state.agents)
        goal = modules.to_local_frame(learner.angles, state.agents.positions[:, 1:] - learner.positions)
        obs = dict(rgb=view.rgb, depth=view.depth, imu=modules.imu(learner), waypoint=goal)
        return obs, None

    def _outcome(self, state, events, params):
        reward = state.arrived.astype(jnp.float32)
        return state, reward, jnp.zeros_like(state.arrived), state.time >= params.max_length
