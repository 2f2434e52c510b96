"""Scenery: geometries turned into what the kernels draw (textures, light intensities, baked light).

Each *distinct* geometry is packed once, so 32768 envs over 64 floor plans hold 64 copies, not 32768.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib.colors
import numpy as np

from jaxstep import grid
from jaxstep.ffi import calls, reference
from jaxstep.ffi.types import MODEL_LINES, Scenery

__all__ = ["Scenery", "scenery", "without_grid", "display", "TEXTURE_RES", "COLORS"]

TEXTURE_RES = 0.05  # metres of line per texel
# Ten bland wall colours, cycled over each geometry's walls
COLORS = ["#c185ae", "#73a171", "#5666a4", "#9f7c4a", "#809cd5", "#566e40", "#8e537b", "#4f9fa4", "#b56d66", "#5a728c"]
# The agent model's line colours: dark front, back and sides, green on the right, red on the left
MODEL_COLORS = [".25", "g", ".25", "r", ".25", "r", ".25", "g"]


def gamma_decode(x: np.ndarray) -> np.ndarray:
    """Display colours to linear ones, which can be interpolated and lit."""
    return x**2.2


def gamma_encode(x: np.ndarray) -> np.ndarray:
    """Linear colours to display ones."""
    return x ** (1 / 2.2)


def _lengths(lines: np.ndarray) -> np.ndarray:
    return np.sqrt(((lines[:, 0] - lines[:, 1]) ** 2).sum(-1))


def texel_counts(lines: np.ndarray) -> np.ndarray:
    """(n,) texels on each of (n, 2, 2) lines: one per TEXTURE_RES metres, rounded up."""
    return np.ceil(_lengths(lines) / TEXTURE_RES).astype(np.int64)


def _rgb(names: Sequence[str]) -> np.ndarray:
    return np.array([matplotlib.colors.to_rgb(c) for c in names])


def _stripes(n: int, rng: np.random.Generator, stripe: float = 0.5) -> np.ndarray:
    """(n,) brightness in [.5, 1) that jumps at random about every `stripe` metres, so depth is easy to see."""
    p = TEXTURE_RES / stripe
    jumps = rng.choice(np.array([0.0, 1.0]), p=np.array([1 - p, p]), size=n) * rng.normal(size=n)
    return 0.5 + 0.5 * (jumps.cumsum() % 1)


def _wall_texels(walls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colors = _rgb(COLORS)[np.arange(len(walls)) % len(COLORS)]
    per_texel = np.repeat(colors, texel_counts(walls), axis=0)
    return gamma_decode(per_texel) * _stripes(len(per_texel), rng)[:, None]


def _model_texels() -> tuple[np.ndarray, np.ndarray]:
    model = reference.MODEL.astype(np.float64)
    counts = texel_counts(model)
    return gamma_decode(np.repeat(_rgb(MODEL_COLORS), counts, axis=0)), counts


def _texel_centres(walls: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(sum(counts), 2) centre of every texel of walls (W, 2, 2)."""
    line = np.repeat(np.arange(len(walls)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    loc = (np.arange(counts.sum()) - first + 0.5) / counts[line]
    return walls[line, 0] * (1 - loc[:, None]) + walls[line, 1] * loc[:, None]


def _check_geometry(g: Mapping, i: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(g, Mapping) or "walls" not in g or "lights" not in g:
        raise ValueError(f"geometries[{i}]: expected a dict with 'walls' (W, 2, 2) and 'lights' (L, 2)")
    try:
        walls = np.asarray(g["walls"], dtype=np.float64)
        lights = np.asarray(g["lights"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"geometries[{i}]: walls and lights must be arrays of numbers ({e})") from e
    if lights.size == 0:
        lights = np.zeros((0, 2))
    if walls.ndim != 3 or walls.shape[1:] != (2, 2):
        raise ValueError(f"geometries[{i}]['walls']: expected shape (W, 2, 2), got {walls.shape}")
    if lights.ndim != 2 or lights.shape[1] != 2:
        raise ValueError(f"geometries[{i}]['lights']: expected shape (L, 2), got {lights.shape}")
    if not (np.isfinite(walls).all() and np.isfinite(lights).all()):
        raise ValueError(f"geometries[{i}]: walls and lights must be finite")
    if (_lengths(walls) == 0).any():
        raise ValueError(f"geometries[{i}]['walls']: zero-length wall at index {int(np.argmin(_lengths(walls)))}")
    return walls, lights


def _distinct(geometries: Sequence[Mapping]) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The distinct (walls, lights) pairs, and each geometry's index among them."""
    keys: dict[bytes, int] = {}
    distinct = []
    index = np.empty(len(geometries), np.int32)
    for i, g in enumerate(geometries):
        walls, lights = _check_geometry(g, i)
        key = walls.tobytes() + b"|" + lights.tobytes()
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append((walls, lights))
        index[i] = keys[key]
    return distinct, index


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


def scenery(
    geometries: Sequence[Mapping], n_agents: int = 1, seed: int = 0, backend: str = "ffi"
) -> Scenery:
    """Packs geometries (one per env) into a Scenery on the default device.

    Each distinct geometry gets wall colours cycled from `COLORS`, a random stripe pattern on its walls, and a
    random intensity in U(0.5, 2) for each light, all drawn from `seed`; its wall texels' light is then baked
    by the bake kernel (`backend` "ffi" or "reference"), and a uniform grid of the walls near each cell is built
    (`jaxstep.grid`), which lets the compiled kernels read only the walls near a move or a view.

    Args:
        geometries: one geometry per env, each a dict with `walls` (W, 2, 2) and `lights` (L, 2) in metres.
        n_agents: agents per env.
        seed: seed for colours, stripes and light intensities.
    """
    if isinstance(geometries, Mapping):
        raise ValueError("geometries: expected a list of geometries (one per env), got a single geometry dict")
    if not isinstance(geometries, Sequence | np.ndarray) and not hasattr(geometries, "__iter__"):
        raise ValueError(f"geometries: expected a list of geometries (one per env), got {type(geometries).__name__}")
    geometries = list(geometries)
    if not geometries:
        raise ValueError("geometries: expected at least one geometry, got an empty list")
    if not isinstance(n_agents, int | np.integer) or n_agents < 1:
        raise ValueError(f"n_agents: expected a positive int, got {n_agents!r}")

    distinct, env_geometry = _distinct(geometries)
    rng = np.random.default_rng(seed)
    walls = [w for w, _ in distinct]
    lights = [np.concatenate([ls, rng.uniform(0.5, 2.0, (len(ls), 1))], -1) for _, ls in distinct]
    wall_texels = [_wall_texels(w, rng) for w in walls]

    model_texels, model_counts = _model_texels()
    all_walls = np.concatenate(walls).reshape(-1, 2, 2)
    wall_counts = texel_counts(all_walls)
    texel_offsets = _offsets(np.concatenate([model_counts, wall_counts]))

    # light every wall texel's centre
    wall_offsets = _offsets([len(w) for w in walls])
    light_offsets = _offsets([len(ls) for ls in lights])
    device_walls = jnp.asarray(all_walls, jnp.float32)
    device_lights = jnp.asarray(np.concatenate(lights).reshape(-1, 3), jnp.float32)
    centres = jnp.asarray(_texel_centres(all_walls, wall_counts), jnp.float32)
    centre_geometry = jnp.asarray(np.repeat(np.repeat(np.arange(len(walls)), [len(w) for w in walls]), wall_counts))
    centre_geometry = centre_geometry.astype(jnp.int32)
    wall_offsets, light_offsets = jnp.asarray(wall_offsets), jnp.asarray(light_offsets)
    baked = _bake(centres, centre_geometry, device_walls, wall_offsets, device_lights, light_offsets, backend)
    grids = grid.build(walls)

    return Scenery(
        env_geometry=jnp.asarray(env_geometry),
        walls=device_walls,
        wall_offsets=wall_offsets,
        lights=device_lights,
        light_offsets=light_offsets,
        texels=jnp.asarray(np.concatenate([model_texels, *wall_texels]), jnp.float32),
        baked=jnp.concatenate([jnp.zeros(len(model_texels), jnp.float32), baked]),
        texel_offsets=jnp.asarray(texel_offsets),
        grid_frames=jnp.asarray(grids.frames),
        grid_shapes=jnp.asarray(grids.shapes),
        cell_offsets=jnp.asarray(grids.cell_offsets),
        cell_walls=jnp.asarray(grids.cell_walls),
        n_agents=int(n_agents),
        max_walls=max(len(w) for w in walls),
        max_lights=max(len(ls) for ls in lights),
    )


def _bake(points, point_geometry, walls, wall_offsets, lights, light_offsets, backend: str) -> jax.Array:
    if backend == "ffi":
        return calls.bake(points, point_geometry, walls, wall_offsets, lights, light_offsets)
    if backend == "reference":
        stub = Scenery(
            env_geometry=point_geometry, walls=walls, wall_offsets=wall_offsets, lights=lights,
            light_offsets=light_offsets, texels=jnp.zeros((0, 3)), baked=jnp.zeros(0),
            texel_offsets=jnp.zeros(MODEL_LINES + walls.shape[0] + 1, jnp.int32), **_no_grid(len(wall_offsets) - 1),
            n_agents=1,
            max_walls=int(np.diff(np.asarray(wall_offsets)).max()),
            max_lights=int(np.diff(np.asarray(light_offsets)).max()),
        )  # fmt: skip
        return reference.bake(stub, points, point_geometry)
    raise ValueError(f"backend: expected 'ffi' or 'reference', got {backend!r}")


def without_grid(s: Scenery) -> Scenery:
    """The scenery with no grid: every search reads all walls, with the same results, more slowly. For walls
    changed after `scenery` built the grid from them (the grid would no longer match)."""
    return dataclasses.replace(s, **_no_grid(s.n_geometries))


def _no_grid(n_geometries: int) -> dict[str, jax.Array]:
    """Scenery grid fields for no grid: every search reads all walls."""
    return dict(grid_frames=jnp.zeros((n_geometries, 3)), grid_shapes=jnp.zeros((n_geometries, 3), jnp.int32),
                cell_offsets=jnp.zeros(1, jnp.int32), cell_walls=jnp.zeros(0, jnp.int32))  # fmt: skip


def env_lines(s: Scenery, e: int) -> dict[str, np.ndarray]:
    """Env e's walls (W, 2, 2), lights (L, 3) and each wall texel's colour and light, as numpy."""
    g = int(s.env_geometry[e])
    w0, w1 = (int(x) for x in s.wall_offsets[g : g + 2])
    l0, l1 = (int(x) for x in s.light_offsets[g : g + 2])
    offsets = np.asarray(s.texel_offsets[MODEL_LINES + w0 : MODEL_LINES + w1 + 1])
    t0, t1 = int(offsets[0]), int(offsets[-1])
    return dict(
        walls=np.asarray(s.walls[w0:w1]),
        lights=np.asarray(s.lights[l0:l1]),
        texels=np.asarray(s.texels[t0:t1]),
        baked=np.asarray(s.baked[t0:t1]),
        texel_offsets=offsets - t0,
    )


def texel_segments(env: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each wall texel of `env_lines(...)` as a segment (T, 2, 2) along its wall, and its lit display colour (T, 3)."""
    counts = np.diff(env["texel_offsets"])
    centres = _texel_centres(env["walls"], counts)
    line = np.repeat(np.arange(len(counts)), counts)
    half = (env["walls"][line, 1] - env["walls"][line, 0]) / counts[line, None] / 2
    colours = np.clip(gamma_encode(env["texels"] * env["baked"][:, None]), 0, 1)
    return np.stack([centres - half, centres + half], 1), colours


def display(s: Scenery, e: int = 0, ax=None):
    """Plan view of env e's scenery: each wall texel in its lit colour, lights as stars. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    if not 0 <= e < s.n_envs:
        raise ValueError(f"e: expected an env index in [0, {s.n_envs}), got {e}")
    env = env_lines(s, e)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    segments, colours = texel_segments(env)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=4))
    ax.scatter(env["lights"][:, 0], env["lights"][:, 1], marker="*", s=120 * env["lights"][:, 2], c="gold", zorder=3)
    ax.set_aspect("equal")
    ax.autoscale()
    ax.set_facecolor("0.95")
    ax.set_title(f"env {e}: geometry {int(s.env_geometry[e])}")
    return ax.figure
