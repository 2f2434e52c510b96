"""Agents, rendering and physics: the two per-step kernels behind every env.

`render`, `observe` and `physics` are pure functions of (scenery, agents), usable inside `jax.jit`, `jax.vmap` and
`jax.lax.scan`. backend="ffi" calls the compiled kernels (CPU or CUDA, wherever the arrays live);
backend="reference" runs the same math in plain JAX (any device, TPUs included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep.ffi import calls, reference
from jaxstep.ffi.types import AGENT_RADIUS, AGENT_WIDTH, MODEL_LINES, OBSERVATIONS, Agents, Observation, Render, Scenery
from jaxstep.spaces import check_int

__all__ = ["AGENT_RADIUS", "AGENT_WIDTH", "MODEL_LINES", "OBSERVATIONS", "Agents", "Observation", "Render", "agents",
           "render", "observe", "physics", "closest_approach"]

BACKENDS = ("ffi", "reference")
MAX_RES = 1 << 16  # pixels; far beyond any useful image, but keeps output sizes sane
MAX_FUSED_SUBSAMPLE = 32  # the compiled observe kernel averages each column within one warp


def agents(n_envs: int, n_agents: int = 1, positions=None, angles=None) -> Agents:
    """Agents at rest: at `positions` (n_envs, n_agents, 2) metres (default the origin) facing `angles` degrees."""
    shape = (n_envs, n_agents)
    positions = jnp.zeros((*shape, 2)) if positions is None else jnp.broadcast_to(positions, (*shape, 2))
    angles = jnp.zeros(shape) if angles is None else jnp.broadcast_to(angles, shape)
    return Agents(
        angles=jnp.asarray(angles, jnp.float32),
        positions=jnp.asarray(positions, jnp.float32),
        velocity=jnp.zeros((*shape, 2), jnp.float32),
        angvelocity=jnp.zeros(shape, jnp.float32),
    )


def _as_f32(name: str, x, shape: tuple[int, ...]) -> jax.Array:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"agents.{name}: expected an array of shape {shape}, got {type(x).__name__}") from e
        dtype = x.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"agents.{name}: expected real numbers, got dtype {dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"agents.{name}: expected shape {shape} (n_envs, n_agents, ...), got {tuple(x.shape)}")
    return jnp.asarray(x, jnp.float32)


def _checked(scenery: Scenery, agents: Agents) -> Agents:
    if not isinstance(scenery, Scenery):
        raise TypeError(f"scenery: expected a jaxstep Scenery (from jaxstep.scene.scenery), got {type(scenery)}")
    if not isinstance(agents, Agents):
        raise TypeError(f"agents: expected a jaxstep.core.Agents, got {type(agents)}")
    lead = (scenery.n_envs, scenery.n_agents)
    return Agents(
        angles=_as_f32("angles", agents.angles, lead),
        positions=_as_f32("positions", agents.positions, (*lead, 2)),
        velocity=_as_f32("velocity", agents.velocity, (*lead, 2)),
        angvelocity=_as_f32("angvelocity", agents.angvelocity, lead),
    )


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def _positive(name: str, value, upper: float = math.inf) -> float:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name}: must be a static Python number, not a traced value")
    if not isinstance(value, int | float | np.integer | np.floating) or not 0 < value < upper:
        raise ValueError(f"{name}: expected a number in (0, {upper}), got {value!r}")
    return float(value)


def render(
    scenery: Scenery,
    agents: Agents,
    res: int = 64,
    fov: float = 130.0,
    backend: str = "ffi",
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
) -> Render:
    """What every agent sees: one ray per pixel across a `fov`-degree field of view.

    Args:
        scenery: from `jaxstep.scene.scenery`, for n_envs envs of n_agents agents.
        agents: angles (n_envs, n_agents) degrees and positions (n_envs, n_agents, 2) metres are read.
        res: pixels (rays) per agent.
        fov: field of view in degrees, in (0, 180).
        backend: "ffi" (compiled kernels) or "reference" (pure JAX).
        n_viewers: render the views of each env's first n_viewers agents only (default: all n_agents). The
            others are still seen; this saves the work of views nobody looks at (a goal marker's, say).
        mask: (n_envs, n_viewers) bool, the views wanted (default: all). The others are not rendered and come
            back empty, as if every ray hit nothing (index -1, distance inf, black).

    Returns:
        Render: indices, locations, dots, distances (n_envs, n_viewers, res) and screen
        (n_envs, n_viewers, res, 3).
    """
    agents, n_viewers, mask, half_width = _view_args(scenery, agents, res, fov, backend, n_viewers, mask)
    kernel = calls.render if backend == "ffi" else reference.render
    return Render(*kernel(scenery, agents, int(res), half_width, AGENT_RADIUS, n_viewers, mask))


def observe(
    scenery: Scenery,
    agents: Agents,
    res: int = 64,
    fov: float = 130.0,
    backend: str = "ffi",
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
    subsample: int = 1,
    max_depth: float = 10.0,
    outputs: Sequence[str] = OBSERVATIONS,
) -> Observation:
    """What every agent observes: `render`'s rays reduced to image columns in the render call itself, so the
    full-resolution render is never stored. Equal to `modules.rgb`/`modules.depth` of `render`'s output, and its
    indices and locations at each column's middle ray, at a fraction of the memory traffic.

    Args:
        scenery, agents, res, fov, backend, n_viewers, mask: as `render`; views not wanted come back as a miss
            would make them (black, depth 0, index -1, location 0).
        subsample: rays per image column (a divisor of res): the columns average their rays' colour and depth.
            Up to 32 on the compiled path's single call; more renders first, then averages.
        max_depth: metres beyond the near plane at which depth falls to 0.
        outputs: which of "rgb", "depth", "indices", "locations" to make; the rest are None and cost nothing.

    Returns:
        Observation: rgb (n_envs, n_viewers, 1, W, 3), depth (n_envs, n_viewers, 1, W, 1), indices and locations
        (n_envs, n_viewers, W), where W = res // subsample.
    """
    agents, n_viewers, mask, half_width = _view_args(scenery, agents, res, fov, backend, n_viewers, mask)
    subsample = check_int("subsample", subsample, 1, res)
    if res % subsample:
        raise ValueError(f"subsample: must divide res ({res}), got {subsample}")
    max_depth = _positive("max_depth", max_depth)
    if not 0 < np.float32(max_depth) < np.inf:  # the kernels take it as a float32
        raise ValueError(f"max_depth: expected a positive number that float32 holds, got {max_depth!r}")
    outputs = tuple(outputs) if not isinstance(outputs, str) else (outputs,)
    if not outputs or any(name not in OBSERVATIONS for name in outputs):
        raise ValueError(f"outputs: expected some of {OBSERVATIONS}, got {outputs!r}")
    args = (scenery, agents, int(res), half_width, AGENT_RADIUS, n_viewers, mask)
    if backend == "ffi" and subsample <= MAX_FUSED_SUBSAMPLE:
        rgb, depth, indices, locations = calls.observe(*args, subsample, max_depth, outputs)
    else:  # columns of more than a warp's rays: render, then average in JAX
        kernel = calls.render if backend == "ffi" else reference.render
        rgb, depth, indices, locations = reference.columns(kernel(*args), subsample, AGENT_RADIUS, max_depth, outputs)
    return Observation(
        rgb=None if rgb is None else rgb[:, :, None],
        depth=None if depth is None else depth[:, :, None, :, None],
        indices=indices,
        locations=locations,
    )


def _view_args(scenery, agents, res, fov, backend, n_viewers, mask) -> tuple[Agents, int, jax.Array | None, float]:
    """Checks render's and observe's common arguments; returns (agents, n_viewers, mask, half_width)."""
    _check_backend(backend)
    if not isinstance(res, int | np.integer) or not 0 < res <= MAX_RES:
        raise ValueError(f"res: expected an int in [1, {MAX_RES}], got {res!r}")
    fov = _positive("fov", fov, 180.0)
    agents = _checked(scenery, agents)
    n_viewers = scenery.n_agents if n_viewers is None else check_int("n_viewers", n_viewers, 1, scenery.n_agents)
    if mask is not None:
        mask = _as_mask(mask, (scenery.n_envs, int(n_viewers)))
    half_width = float(np.float32(math.tan(math.radians(fov) / 2)))
    return agents, int(n_viewers), mask, half_width


def _as_mask(mask, shape: tuple[int, int]) -> jax.Array:
    dtype = getattr(mask, "dtype", None)
    if dtype is None:
        mask = np.asarray(mask)
        dtype = mask.dtype
    if not np.issubdtype(dtype, np.bool_):
        raise TypeError(f"mask: expected bools of shape {shape} (n_envs, n_viewers), got dtype {dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask: expected shape {shape} (n_envs, n_viewers), got {tuple(mask.shape)}")
    return jnp.asarray(mask)


def physics(scenery: Scenery, agents: Agents, fps: float = 10.0, backend: str = "ffi") -> tuple[Agents, jax.Array]:
    """Moves each agent along velocity/fps (and turns it by angvelocity/fps) as far as it can go.

    An agent stops 1% short of touching a wall or another agent; where it is stopped short (progress < 1) its
    velocity and angvelocity are zeroed. Each agent's progress assumes the others make their whole moves
    (megastep's rule); then, reading the step as time (each agent moves at full velocity until its progress runs
    out), an agent's progress is cut 1% short of where it would run into another that stopped earlier, and an
    agent that would still end overlapping another, nearer than it started, is held (progress 0). Agents that
    start apart never meet during a step.

    Returns:
        (agents, progress): the moved agents, and progress (n_envs, n_agents), the fraction of the move made.
    """
    _check_backend(backend)
    fps = _positive("fps", fps)
    agents = _checked(scenery, agents)
    kernel = calls.physics if backend == "ffi" else reference.physics
    return kernel(scenery, agents, fps, AGENT_RADIUS)


def closest_approach(before: jax.Array, move: jax.Array, progress: jax.Array) -> jax.Array:
    """(n_envs, A, A) closest distance in metres between each pair of agents during a physics step; inf on the
    diagonal. For checking the physics (no two agents that start apart should come within 2 * AGENT_RADIUS).

    Reads the step as the physics does: each agent moves at its full velocity until its progress runs out, then
    stands. before: positions (n_envs, A, 2) metres; move: velocity / fps (n_envs, A, 2), metres per step;
    progress: (n_envs, A) from `physics`.
    """
    x_i, x_j = progress[:, :, None], progress[:, None, :]

    def gap(t):
        own = jnp.minimum(t, x_i)[..., None] * move[:, :, None]
        other = jnp.minimum(t, x_j)[..., None] * move[:, None, :]
        return before[:, :, None] - before[:, None] + own - other

    # the gap moves in a straight line between the moments either agent stops
    times = [jnp.zeros_like(x_i + x_j), jnp.minimum(x_i, x_j), jnp.maximum(x_i, x_j), jnp.ones_like(x_i + x_j)]
    d = jnp.min(jnp.stack([_segment_distance(gap(a), gap(b)) for a, b in zip(times[:-1], times[1:], strict=True)]), 0)
    return jnp.where(jnp.eye(before.shape[1], dtype=bool), jnp.inf, d)


def _segment_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """Distance from the origin to the segment a-b; a, b (..., 2)."""
    ab = b - a
    t = jnp.clip(-jnp.sum(a * ab, -1) / jnp.maximum(jnp.sum(ab * ab, -1), 1e-30), 0, 1)
    return jnp.linalg.norm(a + t[..., None] * ab, axis=-1)
