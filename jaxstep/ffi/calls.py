"""Thin wrappers that call the compiled handlers through `jax.ffi.ffi_call`.

One target name per kernel is registered for both "cpu" and "CUDA", so a call runs on whichever device its
inputs live on. Every leading dimension is a batch dimension to the handlers, so `jax.vmap` works through
`vmap_method="broadcast_all"`. Shapes are checked by the callers (`jaxstep.core`) and again in C++.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep.ffi.types import OBSERVATIONS, Agents, Scenery


@functools.cache
def register() -> tuple[str, ...]:
    """Registers the handlers with XLA once; returns the platforms that have them."""
    try:
        from jaxstep.ffi import _cpu
    except ImportError as e:
        raise RuntimeError(
            "jaxstep's compiled kernels are missing: install the package with `pip install .` "
            "(or use backend='reference')"
        ) from e
    platforms = ["cpu"]
    for name, capsule in _cpu.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    try:
        from jaxstep.ffi import _cuda
    except ImportError:  # built without nvcc
        return tuple(platforms)
    for name, capsule in _cuda.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
    return (*platforms, "cuda")


def _f32(x: float) -> np.float32:
    # attributes must arrive as float32: a Python float is sent as f64 and fails to decode
    return np.float32(x)


def _views(scenery: Scenery, agents: Agents, n_viewers: int | None, mask: jax.Array | None):
    """(lead, inputs): the views' leading shape (*batch, n_envs, n_viewers), and the render and observe handlers'
    inputs (the agents' poses, the mask, every scenery buffer), the mask all True where None."""
    lead = (*agents.angles.shape[:-1], agents.angles.shape[-1] if n_viewers is None else n_viewers)
    mask = jnp.ones(lead, bool) if mask is None else mask
    s = scenery
    return lead, (agents.angles, agents.positions, mask, s.env_geometry, s.walls, s.wall_offsets, s.lights,
                  s.light_offsets, s.texels, s.baked, s.texel_offsets, *_grid(s))  # fmt: skip


def _grid(s: Scenery) -> tuple[jax.Array, ...]:
    return s.grid_frames, s.grid_shapes, s.cell_offsets, s.cell_walls


def render(
    scenery: Scenery,
    agents: Agents,
    res: int,
    half_width: float,
    radius: float,
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """(indices, locations, dots, distances, screen) for every ray of the first n_viewers agents' views (all).

    Views where mask (n_envs, n_viewers) is False are left empty (as if every ray hit nothing).
    """
    register()
    lead, inputs = _views(scenery, agents, n_viewers, mask)
    f32 = jnp.float32
    out = (
        jax.ShapeDtypeStruct((*lead, res), jnp.int32),
        jax.ShapeDtypeStruct((*lead, res), f32),
        jax.ShapeDtypeStruct((*lead, res), f32),
        jax.ShapeDtypeStruct((*lead, res), f32),
        jax.ShapeDtypeStruct((*lead, res, 3), f32),
    )
    call = jax.ffi.ffi_call("jaxstep_render", out, vmap_method="broadcast_all")
    return call(*inputs, half_width=_f32(half_width), radius=_f32(radius))


def observe(
    scenery: Scenery,
    agents: Agents,
    res: int,
    half_width: float,
    radius: float,
    n_viewers: int | None = None,
    mask: jax.Array | None = None,
    subsample: int = 1,
    max_depth: float = 10.0,
    outputs: tuple[str, ...] = OBSERVATIONS,
) -> tuple[jax.Array | None, ...]:
    """(rgb, depth, indices, locations) of W = res // subsample image columns of each view, from one kernel call;
    the outputs not named in `outputs` are None (and not written). subsample must divide res and be at most 32.

    rgb (*lead, W, 3) and depth (*lead, W) average each column's rays; indices and locations (*lead, W) are those of
    its middle ray (subsample // 2). lead = (n_envs, n_viewers).
    """
    register()
    lead, inputs = _views(scenery, agents, n_viewers, mask)
    w = res // subsample if subsample > 0 else 0  # the handler refuses a bad subsample with a clear error
    shapes = dict(rgb=((w, 3), jnp.float32), depth=((w,), jnp.float32), indices=((w,), jnp.int32),
                  locations=((w,), jnp.float32))  # fmt: skip
    # an output with no elements is one not wanted
    out = tuple(
        jax.ShapeDtypeStruct((*lead, *(shape if name in outputs else (0,))), dtype)
        for name, (shape, dtype) in shapes.items()
    )
    call = jax.ffi.ffi_call("jaxstep_observe", out, vmap_method="broadcast_all")
    result = call(
        *inputs,
        half_width=_f32(half_width),
        radius=_f32(radius),
        res=np.int32(res),
        subsample=np.int32(subsample),
        max_depth=_f32(max_depth),
    )
    return tuple(x if name in outputs else None for name, x in zip(shapes, result, strict=True))


def physics(scenery: Scenery, agents: Agents, fps: float, radius: float) -> tuple[Agents, jax.Array]:
    """Moves every agent as far along velocity/fps as it can go; returns (agents, progress)."""
    register()
    out = (
        jax.ShapeDtypeStruct(agents.angles.shape, jnp.float32),
        jax.ShapeDtypeStruct(agents.positions.shape, jnp.float32),
        jax.ShapeDtypeStruct(agents.velocity.shape, jnp.float32),
        jax.ShapeDtypeStruct(agents.angvelocity.shape, jnp.float32),
        jax.ShapeDtypeStruct(agents.angles.shape, jnp.float32),
    )
    # the agents are carried state: update them in place
    call = jax.ffi.ffi_call(
        "jaxstep_physics", out, vmap_method="broadcast_all", input_output_aliases={0: 0, 1: 1, 2: 2, 3: 3}
    )
    angles, positions, velocity, angvelocity, progress = call(
        agents.angles,
        agents.positions,
        agents.velocity,
        agents.angvelocity,
        scenery.env_geometry,
        scenery.walls,
        scenery.wall_offsets,
        *_grid(scenery),
        fps=_f32(fps),
        radius=_f32(radius),
    )
    return Agents(angles, positions, velocity, angvelocity), progress


def bake(
    points: jax.Array,
    point_geometry: jax.Array,
    walls: jax.Array,
    wall_offsets: jax.Array,
    lights: jax.Array,
    light_offsets: jax.Array,
) -> jax.Array:
    """Light in [0, 1] falling on each of (P, 2) points from its geometry's lights, occluded by its walls."""
    register()
    out = jax.ShapeDtypeStruct(points.shape[:-1], jnp.float32)
    call = jax.ffi.ffi_call("jaxstep_bake", out, vmap_method="broadcast_all")
    return call(points, point_geometry, walls, wall_offsets, lights, light_offsets)
