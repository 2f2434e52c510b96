"""Explorer: one agent rewarded for seeing wall texels it has not seen before in this episode."""

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


@pytree_dataclass
class ExplorerParams:
    accel: float = 5.0  # metres per second squared
    ang_accel: float = 180.0  # degrees per second squared
    decay: float = 0.125  # fraction of velocity lost each step
    patience: int = 200  # an episode ends once its length exceeds the texels seen plus this


@pytree_dataclass
class ExplorerState(BaseState):
    # (n_envs, ceil(max_texels / 32)) uint32, packed bits: texel i of the env's walls was seen this episode iff
    # bit i % 32 (least significant first) of word i // 32 is set; bits past max_texels are zero
    seen: jax.Array
    potential: jax.Array  # (n_envs, 1) int32, how many


class Explorer(Env):
    """One agent per env in procedural floor plans (or `geometries`), with momentum.

    obs: rgb (n_envs, 1, 1, res, 3) and depth (n_envs, 1, 1, res, 1) in [0, 1]; imu (n_envs, 1, 3).
    action: (n_envs, 1) in [0, 7). reward: (n_envs, 1), wall texels seen for the first time this episode / res.
    terminated: never. truncated: once the episode's length reaches texels seen + patience.
    """

    def __init__(self, n_envs: int = 1, geometries=None, res: int = 64, fov: float = 130.0, fps: float = 10.0,
                 seed: int = 0, backend: str = "ffi"):  # fmt: skip
        self.n_envs, self.n_agents = check_count("n_envs", n_envs), 1
        self.res, self.backend = check_count("res", res), check_backend(backend)
        self.fov, self.fps = check_camera(fov, fps)
        geometries = check_geometries(geometries, n_envs, default_floorplans(n_envs, seed))
        self.scenery, self.spawns = world(geometries, 1, seed, backend)
        self._texels = _texel_ranges(self.scenery)
        self.max_texels = int(self._texels[1].max())
        self.observation_space = spaces.Dict(
            rgb=spaces.MultiImage(n_envs, 1, 1, res, 3),
            depth=spaces.MultiImage(n_envs, 1, 1, res, 1),
            imu=spaces.MultiVector(n_envs, 1, 3),
        )
        self.action_space = spaces.MultiDiscrete(n_envs, 1, modules.N_ACTIONS)
        self.default_params = ExplorerParams()

    def _init(self, key, params):
        key, sub = jax.random.split(key)
        n = self.n_envs
        state = ExplorerState(
            agents=core.agents(n, 1), key=key, time=jnp.zeros((n, 1), jnp.int32),
            seen=jnp.zeros((n, n_words(self.max_texels)), jnp.uint32), potential=jnp.zeros((n, 1), jnp.int32),
        )  # fmt: skip
        return self._respawn(state, jnp.ones((n, 1), bool), sub, params)

    def _respawn(self, state, mask, key, params):
        state = self._spawn(state, mask, key)
        seen = jnp.where(mask, jnp.uint32(0), state.seen)
        return replace(state, seen=seen, potential=jnp.where(mask, 0, state.potential))

    def _move(self, state, actions, params):
        return self._momentum(state, actions, params)

    def _observe(self, state, params, only=None):
        view = core.observe(self.scenery, state.agents, self.res, self.fov, self.backend, mask=only)
        obs = dict(rgb=view.rgb, depth=view.depth, imu=modules.imu(state.agents))
        return obs, self._seen_now(view)

    def _seen_now(self, view) -> jax.Array:
        """(n_envs, ceil(max_texels / 32)) uint32, packed like `ExplorerState.seen`: the texels some ray hits now."""
        first, _ = self._texels
        s = self.scenery
        wall = view.indices - MODEL_LINES  # one agent: lines past its model are walls
        is_wall = wall >= 0
        g = s.env_geometry[:, None, None]
        line = MODEL_LINES + s.wall_offsets[g] + jnp.maximum(wall, 0)
        start, width = s.texel_offsets[line], s.texel_offsets[line + 1] - s.texel_offsets[line]
        texel = start + jnp.minimum(jnp.floor(width * view.locations).astype(jnp.int32), width - 1)
        texel = jnp.where(is_wall, texel - first[:, None, None], self.max_texels)  # misses dropped below
        return scatter_bits(texel.reshape(self.n_envs, -1), self.max_texels)

    def _outcome(self, state, seen_now, params):
        seen = state.seen | seen_now
        potential = count_bits(seen)
        reward = (potential - state.potential).astype(jnp.float32) / self.res
        truncated = state.time >= potential + params.patience
        no = jnp.zeros_like(truncated)
        return replace(state, seen=seen, potential=potential), reward, no, truncated

    def _restart(self, state, seen_now, mask):
        # what a fresh agent sees first is seen, but not rewarded
        seen = jnp.where(mask, state.seen | seen_now, state.seen)
        return replace(state, seen=seen, potential=count_bits(seen))


def n_words(n: int) -> int:
    """How many uint32 words hold n packed bits."""
    return -(-n // 32)


def scatter_bits(indices: jax.Array, n: int) -> jax.Array:
    """int (rows, k) -> uint32 (rows, ceil(n / 32)), packed like `ExplorerState.seen`: bit i of a row is set iff
    i is among the row's indices; indices outside [0, n) are dropped.

    Straight into words, with no (rows, n) bool table: each row's indices are sorted so that repeats can be
    dropped, and distinct bits of a word then add up to their or.
    """
    ordered = jnp.sort(indices, axis=-1)
    first = jnp.concatenate([jnp.ones_like(ordered[:, :1], bool), ordered[:, 1:] != ordered[:, :-1]], axis=-1)
    keep = first & (ordered >= 0) & (ordered < n)
    index = jnp.where(keep, ordered, 0)
    bits = jnp.where(keep, jnp.uint32(1) << (index % 32).astype(jnp.uint32), jnp.uint32(0))
    rows = jnp.broadcast_to(jnp.arange(indices.shape[0])[:, None], indices.shape)
    return jnp.zeros((indices.shape[0], n_words(n)), jnp.uint32).at[rows, index // 32].add(bits)


def unpack_bits(words: jax.Array, n: int) -> jax.Array:
    """uint32 (..., w) -> bool (..., n): the bits packed like `ExplorerState.seen` (n <= 32 * w)."""
    bits = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return bits.reshape(*words.shape[:-1], 32 * words.shape[-1])[..., :n].astype(bool)


def count_bits(words: jax.Array) -> jax.Array:
    """uint32 (n_envs, w) -> (n_envs, 1) int32, how many bits are set in each row."""
    return jax.lax.population_count(words).astype(jnp.int32).sum(-1, keepdims=True)


def _texel_ranges(s) -> tuple[jax.Array, np.ndarray]:
    """Each env's first wall texel (n_envs,) on the device, and its wall texel count (n_envs,) as numpy."""
    g = np.asarray(s.env_geometry)
    offsets, texel_offsets = np.asarray(s.wall_offsets), np.asarray(s.texel_offsets)
    first = texel_offsets[MODEL_LINES + offsets[g]]
    return jnp.asarray(first), texel_offsets[MODEL_LINES + offsets[g + 1]] - first
