"""Adapters from jaxstep's functional envs to the APIs of other RL libraries.

- `GymnasiumVectorEnv(env, seed=0, params=None)`: a `gymnasium.vector.VectorEnv`, numpy in and out, holding the
  state and PRNG key itself. Every agent of every env is one sub-environment, so ``num_envs = n_envs * n_agents``
  (for the single-agent envs, ``n_envs``); sub-env ``i`` is agent ``i % n_agents`` of env ``i // n_agents``.
- `GymnaxEnv(env)`: gymnax's functional API, ``obs, state = reset(key, params)`` and
  ``obs, state, reward, done, info = step(key, state, action, params)``, pure, jit-able and vmap-able, with
  jaxstep's own batched shapes ``(n_envs, n_agents, ...)``.

Autoreset. jaxstep resets an agent whose episode ended inside the very step that ended it: that step returns the
reward, ``terminated`` and ``truncated`` of the old episode's last transition, while its observation is already
the first of the new episode, and the old episode's last observation is returned separately as ``final_obs``.

- In gymnasium's terms this is ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``). As in gymnasium's own
  `SyncVectorEnv` in that mode, a step in which some sub-envs finished has ``infos["final_obs"]``, a numpy object
  array of length ``num_envs`` holding each finished sub-env's last observation (a dict like one element of
  ``single_observation_space``) and None elsewhere, with the mask ``infos["_final_obs"]``; likewise
  ``infos["final_info"]`` and ``infos["_final_info"]`` for that step's infos. Steps in which no sub-env finished
  have neither key. No step is spent on resets: the next `step` already acts in the new episode.
- In gymnax's terms it is gymnax's usual autoreset: the ``obs`` and ``state`` that `step` returns for a done agent
  are the new episode's, ``done = terminated | truncated``, and ``info`` adds ``terminated``, ``truncated``,
  ``discount`` (``1 - terminated``) and ``final_obs`` (the observation to bootstrap from after a truncation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import spaces
from jaxstep.envs.base import Env, TimeStep
from jaxstep.pytree import replace

try:  # gymnasium is optional: GymnaxEnv works without it
    import gymnasium
    from gymnasium.vector.utils import batch_space

    _VectorEnv = gymnasium.vector.VectorEnv
except ImportError:  # pragma: no cover
    gymnasium = None
    _VectorEnv = object


def _need_gymnasium() -> None:
    if gymnasium is None:  # pragma: no cover
        raise ImportError("jaxstep.wrappers: the gymnasium adapters need gymnasium (pip install 'gymnasium>=1.0')")


__all__ = ["GymnasiumVectorEnv", "GymnaxEnv", "gymnasium_space"]


# ---------------------------------------------------------------------------------------------------------------------
# spaces


def gymnasium_space(space: spaces.Space) -> gymnasium.spaces.Space:
    """The gymnasium space of ONE agent's part of a jaxstep space (its ``agent_shape``).

    MultiImage -> ``Box(low, high, (height, width, channels), float32)``; MultiVector -> ``Box(low, high, (dim,),
    float32)`` (bounds may be infinite); MultiConstant -> ``Box(value, value, (), float32)``; MultiDiscrete ->
    ``Discrete(n_actions)`` (int32); Dict -> ``gymnasium.spaces.Dict`` of its members' spaces, in the same order.
    """
    _need_gymnasium()
    if isinstance(space, spaces.Dict):
        # an OrderedDict, as gymnasium sorts the keys of plain dicts
        return gymnasium.spaces.Dict(OrderedDict((name, gymnasium_space(member)) for name, member in space.items()))
    if isinstance(space, spaces.MultiImage | spaces.MultiVector):
        return gymnasium.spaces.Box(space.low, space.high, space.agent_shape, np.float32)
    if isinstance(space, spaces.MultiConstant):
        return gymnasium.spaces.Box(space.value, space.value, (), np.float32)
    if isinstance(space, spaces.MultiDiscrete):
        return gymnasium.spaces.Discrete(space.n_actions, dtype=np.int32)
    raise TypeError(f"space: no gymnasium equivalent of {type(space).__name__}")


# ---------------------------------------------------------------------------------------------------------------------
# gymnasium


def _flat(x: jax.Array) -> jax.Array:
    """(n_envs, n_agents, ...) -> (n_envs * n_agents, ...)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _flat_outputs(ts: TimeStep) -> dict[str, Any]:
    return dict(
        obs=jax.tree.map(_flat, ts.obs),
        reward=_flat(ts.reward),
        terminated=_flat(ts.terminated),
        truncated=_flat(ts.truncated),
        final_obs=jax.tree.map(_flat, ts.final_obs),
        info=jax.tree.map(_flat, ts.info),
    )


def _host(tree: Any) -> Any:
    """`tree`'s jax arrays as writable numpy arrays of their own (one batched device-to-host transfer)."""
    return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def _cast(obs: Any, space: gymnasium.spaces.Space) -> Any:
    """`obs` (numpy, batched or not) with the dtypes of the gymnasium `space`; plain dicts for Dict spaces."""
    if isinstance(space, gymnasium.spaces.Dict):
        return {name: _cast(obs[name], member) for name, member in space.spaces.items()}
    return obs.astype(space.dtype, copy=False)


def _vector_infos(info: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """gymnasium's vector info convention: each ``key`` (a (num_envs, ...) array) with a bool mask ``_key``."""
    infos: dict[str, Any] = {}
    for name, value in info.items():
        if isinstance(value, Mapping):
            infos[name] = _vector_infos(value, mask)
        else:
            infos[name] = np.where(mask.reshape(mask.shape + (1,) * (value.ndim - 1)), value, np.zeros_like(value))
        infos[f"_{name}"] = mask.copy()
    return infos


class GymnasiumVectorEnv(_VectorEnv):
    """A jaxstep env as a `gymnasium.vector.VectorEnv`: numpy in, numpy out, state and PRNG key held inside.

    Each agent of each env is a sub-env: ``num_envs = env.n_envs * env.n_agents`` (just ``env.n_envs`` for the
    single-agent envs), and sub-env ``i`` is agent ``i % n_agents`` of env ``i // n_agents``. Agents of one env
    share its world (in deathmatch they see and shoot each other) but their episodes are separate: each sub-env
    terminates, truncates and is reset on its own.

    Spaces, N = num_envs: ``single_observation_space`` is a ``gymnasium.spaces.Dict`` of one agent's Boxes (see
    `gymnasium_space`; images (H, W, C) float32 in [low, high], vectors (dim,) float32), ``observation_space`` the
    same batched to (N, ...); ``single_action_space`` is ``Discrete(n_actions)`` and ``action_space``
    ``MultiDiscrete([n_actions] * N)``.

    ``reset(seed=s)`` starts every env from ``env.reset(jax.random.key(s), params)``; a reset without a seed uses
    the key of the previous reset folded with 1 (``jax.random.fold_in(key, 1)``), and the first one the
    constructor's ``seed``. Rewards are float32 (N,), terminations and truncations bool (N,).

    Autoreset follows ``gymnasium.vector.AutoresetMode.SAME_STEP``; see the module docstring for the infos.
    ``infos`` also carry the env's own infos (e.g. ``invalid_actions``), flattened to (N,), each with its
    ``_name`` mask (all True). `render` returns None.

    Args:
        env: a jaxstep env, e.g. ``jaxstep.make("explorer", n_envs=64)``.
        seed: the seed of the first reset if it is given none.
        params: the env's params pytree (default ``env.default_params``); may be replaced later through
            ``self.params`` (same structure, no recompilation).
    """

    def __init__(self, env: Env, seed: int = 0, params: Any = None) -> None:
        _need_gymnasium()
        seed = _check_seed(seed)
        self.env = env
        self.params = env.default_params if params is None else params
        self.n_envs, self.n_agents = env.n_envs, env.n_agents
        self.num_envs = env.n_envs * env.n_agents
        self.n_actions = env.action_space.n_actions

        self.single_observation_space = gymnasium_space(env.observation_space)
        self.single_action_space = gymnasium.spaces.Discrete(self.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_action_space.seed(seed)
        self.action_space.seed(seed)

        self.metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP, "render_modes": []}
        self.render_mode = None
        self._key = jax.random.key(seed)
        self._state: Any = None

        shape = (self.n_envs, self.n_agents)

        def reset(key: jax.Array, params: Any) -> tuple[Any, dict[str, Any]]:
            state, ts = env.reset(key, params)
            return state, _flat_outputs(ts)

        def step(state: Any, actions: jax.Array, params: Any) -> tuple[Any, dict[str, Any]]:
            state, ts = env.step(state, actions.reshape(shape), params)
            return state, _flat_outputs(ts)

        self._reset = jax.jit(reset)
        self._step = jax.jit(step)

    @property
    def state(self) -> Any:
        """The jaxstep state of the envs (None before the first reset or after `close`); settable, e.g. to restore
        a snapshot (it must come from this env: same structure, shapes and dtypes)."""
        return self._state

    @state.setter
    def state(self, state: Any) -> None:
        self._state = state

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Starts a new episode in every sub-env.

        Args:
            seed: a non-negative int; the envs start from ``env.reset(jax.random.key(seed), params)``. One seed
                covers the whole batch (per-sub-env seeds are not supported). None: the next key, see the class.
            options: accepted for gymnasium's API and ignored.

        Returns:
            obs: dict of (num_envs, ...) numpy arrays in ``observation_space``; infos: the env's infos, see the class.
        """
        if seed is not None:
            seed = _check_seed(seed)
            self._key = jax.random.key(seed)
        super().reset(seed=seed)
        key = self._key
        self._key = jax.random.fold_in(key, 1)
        self._state, out = self._reset(key, self.params)
        out = _host(dict(obs=out["obs"], info=out["info"]))
        all_envs = np.ones(self.num_envs, bool)
        return _cast(out["obs"], self.observation_space), _vector_infos(out["info"], all_envs)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Steps every sub-env; those whose episode ends are reset in the same step (``AutoresetMode.SAME_STEP``).

        Args:
            actions: (num_envs,) integers in ``[0, n_actions)``, a member of ``action_space``.

        Returns:
            obs: dict of (num_envs, ...) numpy arrays, the new episode's first observation where a sub-env finished;
            rewards: (num_envs,) float32; terminations, truncations: (num_envs,) bool;
            infos: dict; with ``final_obs``/``_final_obs`` and ``final_info``/``_final_info`` when a sub-env finished.

        Raises:
            ValueError: `actions` has the wrong shape, is not integers or is out of range.
            gymnasium.error.ResetNeeded: `reset` was not called first (or the env was closed).
        """
        actions = self._check_actions(actions)
        if self._state is None:
            raise gymnasium.error.ResetNeeded("step: call reset() before step()")
        self._state, out = self._step(self._state, actions, self.params)
        host = _host({name: out[name] for name in ("obs", "reward", "terminated", "truncated", "info")})
        terminated, truncated = host["terminated"], host["truncated"]
        done = terminated | truncated
        infos = _vector_infos(host["info"], np.ones(self.num_envs, bool))
        if done.any():
            final = _cast(_host(out["final_obs"]), self.observation_space)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = jax.tree.map(lambda x, i=i: np.array(x[i]), final)  # 0-d arrays, not scalars
            infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
            infos["final_info"], infos["_final_info"] = _vector_infos(host["info"], done), done.copy()
        obs = _cast(host["obs"], self.observation_space)
        return obs, host["reward"], terminated, truncated, infos

    def _check_actions(self, actions: Any) -> np.ndarray:
        shape = (self.num_envs,)
        try:
            array = np.asarray(actions)
        except (ValueError, TypeError) as e:
            raise ValueError(f"actions: expected {shape} integers in [0, {self.n_actions}), got {actions!r}") from e
        if array.dtype == object or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"actions: expected integers in [0, {self.n_actions}), got dtype {array.dtype}")
        if array.shape != shape:
            raise ValueError(f"actions: expected shape {shape} (num_envs,), got {array.shape}")
        if array.size and (array.min() < 0 or array.max() >= self.n_actions):
            bad = array[(array < 0) | (array >= self.n_actions)]
            raise ValueError(f"actions: expected values in [0, {self.n_actions}), got {bad.tolist()}")
        return array.astype(np.int32)

    def render(self) -> None:
        """Not implemented by the wrapper: returns None (see `jaxstep.plotting` and the recording tools)."""
        return None

    def close_extras(self, **kwargs: Any) -> None:
        """Drops the state; a later `step` needs a `reset`."""
        self._state = None


def _check_seed(seed: Any) -> int:
    return spaces.check_int("seed", seed, minimum=0)


# ---------------------------------------------------------------------------------------------------------------------
# gymnax


class GymnaxEnv:
    """A jaxstep env behind gymnax's functional API, for gymnax-style training code.

    Shapes are jaxstep's, batched over ``(n_envs, n_agents)`` (n, A below): obs is a dict of (n, A, ...) arrays,
    ``action`` (n, A) ints, reward and done (n, A). ``jax.vmap`` over keys/states adds a further batch dim in front.
    Everything is pure: jit, vmap and ``lax.scan`` apply as with gymnax envs.

    PRNG keys: jaxstep's state carries its own key, which drives respawns. `step` folds the ``key`` it is given
    into it (``state.key <- fold_in(state.key, bits(key))``), so that, as in gymnax, the same keys give the same
    trajectory and different step keys give different resets. Pass ``key=None`` to leave the state's key as it
    is, which makes `step` exactly ``env.step``.

    Attributes not found on the wrapper are looked up on the wrapped env (``n_envs``, ``n_agents``, ...).
    """

    def __init__(self, env: Env) -> None:
        self.env = env

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def default_params(self) -> Any:
        """The env's default params pytree."""
        return self.env.default_params

    @property
    def name(self) -> str:
        """The env's registered name (e.g. ``"explorer"``), else its class name."""
        from jaxstep.envs import REGISTRY

        for name, cls in REGISTRY.items():
            if type(self.env) is cls:
                return name
        return type(self.env).__name__

    @property
    def num_actions(self) -> int:
        """Actions per agent."""
        return self.env.action_space.n_actions

    def observation_space(self, params: Any = None) -> spaces.Dict:
        """The jaxstep observation space (leading dims (n_envs, n_agents)); `params` is ignored."""
        return self.env.observation_space

    def action_space(self, params: Any = None) -> spaces.MultiDiscrete:
        """The jaxstep action space: (n_envs, n_agents) ints in [0, num_actions); `params` is ignored."""
        return self.env.action_space

    def reset(self, key: jax.Array, params: Any = None) -> tuple[dict[str, jax.Array], Any]:
        """(obs, state) of a new episode in every env: obs a dict of (n, A, ...) arrays."""
        state, ts = self.env.reset(key, params)
        return ts.obs, state

    def step(
        self, key: jax.Array | None, state: Any, action: jax.Array, params: Any = None
    ) -> tuple[dict[str, jax.Array], Any, jax.Array, jax.Array, dict[str, Any]]:
        """One step of every env, with autoreset: (obs, state, reward, done, info).

        Args:
            key: a PRNG key folded into the state's key (see the class), or None to use the state's key alone.
            state: from `reset` or a previous `step`.
            action: (n, A) ints in [0, num_actions).
            params: the env's params (default ``default_params``).

        Returns:
            obs: dict of (n, A, ...), the new episode's first observation where done; state; reward: (n, A) float32;
            done: (n, A) bool, terminated | truncated; info: dict with ``terminated``, ``truncated`` (n, A) bool,
            ``discount`` (n, A) float32 (0 where terminated), ``final_obs`` (like obs, the last observation of the
            episode that ended), and the env's own infos (e.g. ``invalid_actions``).
        """
        if key is not None:
            state = replace(state, key=jax.random.fold_in(state.key, jax.random.bits(key, (), jnp.uint32)))
        state, ts = self.env.step(state, action, params)
        info = dict(
            ts.info,
            terminated=ts.terminated,
            truncated=ts.truncated,
            discount=1.0 - ts.terminated.astype(jnp.float32),
            final_obs=ts.final_obs,
        )
        return ts.obs, state, ts.reward, ts.done, info
