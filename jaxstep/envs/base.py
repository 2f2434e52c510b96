"""The functional env contract: `state, ts = env.reset(key)`, `state, ts = env.step(state, action)`.

Both are pure and jit-able, batched over n_envs natively, and work inside `lax.scan` and under `vmap`.
An env object holds only static things (config, spaces, scenery); everything that changes is in the state
pytree, PRNG key included. What may change during training (speeds, episode limits) is in a params pytree
passed to reset and step (default: `env.default_params`).

Finished agents are reset inside `step`: the returned `ts.obs` is then the first observation of the new
episode, and `ts.final_obs` the last one of the old (for bootstrapping); elsewhere the two are equal.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, modules, scene, spaces
from jaxstep.ffi.types import Agents
from jaxstep.pytree import pytree_dataclass, replace

State = TypeVar("State")
Params = TypeVar("Params")


@pytree_dataclass
class TimeStep:
    """What an env returns each step; n = n_envs, A = n_agents.

    Attributes:
        obs: dict of (n, A, ...) arrays matching `env.observation_space`.
        reward: (n, A) float32.
        terminated: (n, A) bool, the agent's episode ended (no value to bootstrap from).
        truncated: (n, A) bool, the agent's episode was cut off (bootstrap from `final_obs`).
        final_obs: like obs: the observation before any automatic reset this step.
        info: dict of (n, A) arrays; `invalid_actions` marks actions outside the action space (run as no-ops).
    """

    obs: dict
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: dict
    info: dict

    @property
    def done(self) -> jax.Array:
        """(n, A) bool: the agent's episode ended this step, one way or the other."""
        return self.terminated | self.truncated


class Env(Generic[State, Params]):
    """Base of jaxstep's envs. A subclass sets `n_envs`, `n_agents`, `fps`, the spaces, `default_params` and
    `scenery` in `__init__`, and implements the five hooks below."""

    n_envs: int
    n_agents: int
    fps: float
    fov: float
    backend: str
    scenery: scene.Scenery
    observation_space: spaces.Dict
    action_space: spaces.MultiDiscrete
    default_params: Params

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        observe = cls.__dict__.get("_observe")
        if observe is not None and "only" not in inspect.signature(observe).parameters:
            # an env written before `only` existed: it renders every view, which is correct, only slower
            @functools.wraps(observe)
            def _observe(self, state, params, only=None):
                return observe(self, state, params)

            cls._observe = _observe

    # --- hooks -------------------------------------------------------------------------------------------
    def _init(self, key: jax.Array, params: Params) -> State:
        """A fresh state: every agent spawned, every counter at zero."""
        raise NotImplementedError

    def _respawn(self, state: State, mask: jax.Array, key: jax.Array, params: Params) -> State:
        """`state` with the agents under mask (n, A) reset to the start of a new episode."""
        raise NotImplementedError

    def _move(self, state: State, actions: jax.Array, params: Params) -> State:
        """Applies valid actions (n, A) and steps the physics."""
        raise NotImplementedError

    def _observe(self, state: State, params: Params, only: jax.Array | None = None) -> tuple[dict, Any]:
        """(obs, events) of the current state; events are whatever `_outcome` needs (pure: no state change).

        only: (n_envs, n_agents) bool, the agents whose observations will be used (None: all). Pass it on to
        `core.render` as `mask`, so the other views are not rendered; their obs and events may be anything.
        """
        raise NotImplementedError

    def _outcome(self, state: State, events: Any, params: Params) -> tuple[State, jax.Array, jax.Array, jax.Array]:
        """(state, reward, terminated, truncated) after a move, given the events observed."""
        raise NotImplementedError

    def _refresh(self, obs: dict, state: State) -> dict:
        """Observations that `_outcome` changed (e.g. health), brought up to date; default: as they were."""
        return obs

    # --- shared pieces of the hooks -----------------------------------------------------------------------
    def _spawn(self, state: State, mask: jax.Array, key: jax.Array) -> State:
        """`state` with the agents under mask (n, A) at rest at random spawns, their clocks at zero."""
        agents = modules.respawn(state.agents, self.spawns, self.scenery.env_geometry, mask, key)
        return replace(state, agents=agents, time=jnp.where(mask, 0, state.time))

    def _physics(self, state: State, agents: Agents) -> State:
        """`state` with `agents` (velocities set) moved by the physics, every clock a step on."""
        agents, _ = core.physics(self.scenery, agents, self.fps, self.backend)
        return replace(state, agents=agents, time=state.time + 1)

    def _momentum(self, state: State, actions: jax.Array, params: Params) -> State:
        """`_move` for momentum movement with params.accel, params.ang_accel and params.decay."""
        p = params
        return self._physics(state, modules.momentum_movement(state.agents, actions, self.fps, p.accel,
                                                              p.ang_accel, p.decay))  # fmt: skip

    def _restart(self, state: State, events: Any, mask: jax.Array) -> State:
        """Lets a just-reset agent's first observation count (e.g. texels already seen); default: nothing."""
        return state

    # --- the contract -------------------------------------------------------------------------------------
    def reset(self, key: jax.Array, params: Params | None = None) -> tuple[State, TimeStep]:
        """A new episode in every env: (state, ts) with zero rewards."""
        params = self.default_params if params is None else params
        state = self._init(key, params)
        obs, events = self._observe(state, params)
        all_agents = jnp.ones((self.n_envs, self.n_agents), bool)
        state = self._restart(state, events, all_agents)
        no = jnp.zeros((self.n_envs, self.n_agents), bool)
        zero = jnp.zeros((self.n_envs, self.n_agents), jnp.float32)
        return state, TimeStep(obs, zero, no, no, obs, dict(invalid_actions=no))

    def step(self, state: State, action: jax.Array, params: Params | None = None) -> tuple[State, TimeStep]:
        """Advances every env by one step; action: (n_envs, n_agents) ints from `action_space`."""
        params = self.default_params if params is None else params
        action, invalid = modules.valid_actions(self._check_action(action), self.action_space.n_actions)
        state = self._move(state, action, params)
        final_obs, events = self._observe(state, params)
        state, reward, terminated, truncated = self._outcome(state, events, params)
        final_obs = self._refresh(final_obs, state)
        done = terminated | truncated

        def restart(state):
            key, sub = jax.random.split(state.key)
            state = self._respawn(replace(state, key=key), done, sub, params)
            obs, events = self._observe(state, params, only=done)
            obs = jax.tree.map(lambda new, old: jnp.where(_expand(done, new), new, old), obs, final_obs)
            return self._restart(state, events, done), obs

        # most steps in small batches have no resets: skip the second render then (and in big batches it renders
        # only the views of the agents that reset)
        state, obs = jax.lax.cond(done.any(), restart, lambda s: (s, final_obs), state)
        return state, TimeStep(obs, reward, terminated, truncated, final_obs, dict(invalid_actions=invalid))

    def _check_action(self, action) -> jax.Array:
        shape = (self.n_envs, self.n_agents)
        if not isinstance(action, jax.Array):  # host data: checked before JAX narrows it to int32
            try:
                action = np.asarray(action)
            except (TypeError, ValueError) as e:
                raise TypeError(f"action: expected integers of shape {shape}, got {type(action).__name__}") from e
        if not np.issubdtype(action.dtype, np.integer):
            raise TypeError(f"action: expected integers of shape {shape}, got dtype {action.dtype}")
        if action.shape != shape:
            raise ValueError(f"action: expected shape {shape} (n_envs, n_agents), got {action.shape}")
        if isinstance(action, np.ndarray):
            # values int32 cannot hold are out of range too: make them -1 rather than let them wrap
            # (in int64, which holds -1 whatever the input dtype; wrapped huge uint64 values are masked anyway)
            out_of_range = (action < -1) | (action > np.iinfo(np.int32).max)
            action = np.where(out_of_range, np.int64(-1), action.astype(np.int64))
        return jnp.asarray(action, jnp.int32)

    # --- looking at it ------------------------------------------------------------------------------------
    def snapshot(self, state: State, obs: dict, e: int = 0) -> dict[str, Any]:
        """Env e's part of `state` (all but the key) and of `obs`, as arrays: cheap to keep each step of a scan."""
        self._check_env_index(e)
        fields = {k: getattr(state, k) for k in state.__dataclass_fields__ if k != "key"}
        return jax.tree.map(lambda x: x[e], dict(fields, obs=obs))

    def describe(self, snapshot: dict[str, Any], e: int = 0) -> dict[str, Any]:
        """A snapshot of env e as numpy, with what a picture of it needs (its walls, lights, fov)."""
        self._check_env_index(e)
        return dict(jax.device_get(snapshot), scenery=scene.env_lines(self.scenery, e), fov=self.fov, e=e)

    def state(self, state: State, e: int = 0) -> dict[str, Any]:
        """Env e's state, observations and scenery as numpy arrays, for `plot_state`."""
        obs, _ = self._observe(state, self.default_params)
        return self.describe(self.snapshot(state, obs, e), e)

    def _check_env_index(self, e: int) -> None:
        if not isinstance(e, int | np.integer) or not 0 <= e < self.n_envs:
            raise ValueError(f"e: expected an env index in [0, {self.n_envs}), got {e!r}")

    def plot_state(self, state: dict[str, Any]):
        """A matplotlib figure of one env's state (from `env.state(state, e)`)."""
        from jaxstep import plotting

        return plotting.plot_env(state)

    # the module-level function plot_state uses, so worker processes can draw frames without the env
    plotter = "jaxstep.plotting:plot_env"


def _expand(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


@pytree_dataclass
class BaseState:
    """Fields every env's state has: agents, a PRNG key and each agent's steps since its reset (n, A)."""

    agents: Agents
    key: jax.Array
    time: jax.Array


def world(geometries: list[dict], n_agents: int, seed: int, backend: str) -> tuple[scene.Scenery, modules.Spawns]:
    """Scenery for the geometries (one per env) and spawn points for each distinct one."""
    scenery = scene.scenery(geometries, n_agents=n_agents, seed=seed, backend=backend)
    _, first = np.unique(np.asarray(scenery.env_geometry), return_index=True)
    return scenery, modules.random_spawns([geometries[i] for i in first], seed=seed)


def default_floorplans(n_envs: int, seed: int = 0):
    """A factory of procedural floor plans: as many as envs, up to 256 distinct ones."""
    from jaxstep import geometry

    return lambda: geometry.floorplans(min(n_envs, 256), seed=seed)


NAMED_GEOMETRIES = ("floorplans", "mazes", "box", "column")


def check_geometries(geometries, n_envs: int, default) -> list[dict]:
    """The env's geometries, one per env (cycled), validated. `geometries` may be a list of geometry dicts, one
    dict, None for the env's default, or a name: "floorplans", "mazes" (up to 256 distinct), "box" or "column"."""
    from jaxstep import geometry, toys

    if geometries is None:
        geometries = default()
    elif isinstance(geometries, str):
        named = {
            "floorplans": lambda: geometry.floorplans(min(n_envs, 256)),
            "mazes": lambda: geometry.mazes(min(n_envs, 256)),
            "box": lambda: [toys.box()],
            "column": lambda: [toys.column()],
        }
        if geometries not in named:
            raise ValueError(f"geometries: unknown name {geometries!r}; expected one of {NAMED_GEOMETRIES}")
        geometries = named[geometries]()
    if isinstance(geometries, dict):
        geometries = [geometries]
    geometries = list(geometries)
    if not geometries:
        raise ValueError("geometries: expected at least one geometry, got an empty list")
    checked = [geometry.validate(g) for g in geometries]
    return [checked[i % len(checked)] for i in range(n_envs)]


def check_camera(fov, fps) -> tuple[float, float]:
    """fov in (0, 180) degrees and fps > 0, as floats."""
    for name, value, upper in (("fov", fov, 180.0), ("fps", fps, float("inf"))):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
                or not 0 < value < upper:  # fmt: skip
            raise ValueError(f"{name}: expected a number in (0, {upper}), got {value!r}")
    return float(fov), float(fps)


def check_backend(backend: str) -> str:
    if backend not in core.BACKENDS:
        raise ValueError(f"backend: expected one of {core.BACKENDS}, got {backend!r}")
    return backend


def check_count(name: str, value, upper: int | None = None) -> int:
    return spaces.check_int(name, value, 1, upper)
