"""The pytrees the kernels read and write: Scenery (static for a run), Agents (changes every step), Render and
Observation."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

MODEL_LINES = 8  # lines in an agent's octagonal model; env e's lines are each agent's model lines, then walls
AGENT_WIDTH = 0.15  # metres
AGENT_RADIUS = AGENT_WIDTH / 2**0.5  # metres; used for collisions and as the camera's near plane


@dataclasses.dataclass(frozen=True)
class Scenery:
    """What the kernels draw: each distinct geometry packed once, plus each env's geometry index.

    G distinct geometries hold W walls, L lights and T texels in all. The agent model's texels come first in
    `texels`, then every wall's, in wall order.

    Attributes:
        env_geometry: (n_envs,) int32, the geometry each env uses.
        walls: (W, 2, 2) float32 metres, all geometries' walls.
        wall_offsets: (G + 1,) int32; geometry g owns walls[wall_offsets[g]:wall_offsets[g + 1]].
        lights: (L, 3) float32: x, y in metres and an intensity in [0.5, 2].
        light_offsets: (G + 1,) int32.
        texels: (T, 3) float32, linear (gamma-decoded) RGB colours, 0.05 m of line each.
        baked: (T,) float32, light falling on each wall texel, in [0, 1] (0 for the model's texels, lit at render).
        texel_offsets: (MODEL_LINES + W + 1,) int32; line i's texels are texel_offsets[i]:texel_offsets[i+1], with the
            model's lines first, then the walls.
        grid_frames, grid_shapes, cell_offsets, cell_walls: each geometry's uniform grid of the walls near each of
            its cells (`jaxstep.grid.Grids`, L reaches over C cells in all): (G, 3 + L) float32, (G, 3) int32,
            (C * L + 1,) int32 and (N,) int32. Built with the walls: change both together. A grid of no reaches
            (grid_frames (G, 3)) makes every search read all walls.
        n_agents: agents per env (static).
        max_walls: most walls in any one geometry (static; sizes the pure-JAX reference's padding).
        max_lights: most lights in any one geometry (static).
    """

    env_geometry: jax.Array
    walls: jax.Array
    wall_offsets: jax.Array
    lights: jax.Array
    light_offsets: jax.Array
    texels: jax.Array
    baked: jax.Array
    texel_offsets: jax.Array
    grid_frames: jax.Array
    grid_shapes: jax.Array
    cell_offsets: jax.Array
    cell_walls: jax.Array
    n_agents: int = dataclasses.field(metadata=dict(static=True))
    max_walls: int = dataclasses.field(metadata=dict(static=True))
    max_lights: int = dataclasses.field(metadata=dict(static=True))

    @property
    def n_envs(self) -> int:
        return self.env_geometry.shape[-1]

    @property
    def n_geometries(self) -> int:
        return self.wall_offsets.shape[-1] - 1


jax.tree_util.register_dataclass(
    Scenery,
    data_fields=[f.name for f in dataclasses.fields(Scenery) if not f.metadata.get("static")],
    meta_fields=[f.name for f in dataclasses.fields(Scenery) if f.metadata.get("static")],
)


@dataclasses.dataclass(frozen=True)
class Agents:
    """Every agent's pose and motion.

    Attributes:
        angles: (n_envs, n_agents) float32 degrees in [-180, 180), anticlockwise from the x axis.
        positions: (n_envs, n_agents, 2) float32 metres.
        velocity: (n_envs, n_agents, 2) float32 metres per second.
        angvelocity: (n_envs, n_agents) float32 degrees per second.
    """

    angles: jax.Array
    positions: jax.Array
    velocity: jax.Array
    angvelocity: jax.Array


jax.tree_util.register_dataclass(
    Agents, data_fields=["angles", "positions", "velocity", "angvelocity"], meta_fields=[]
)


class Render(NamedTuple):
    """What each viewing agent sees: one ray per pixel column, R = res; n_viewers is n_agents unless
    `core.render` was asked for fewer.

    Attributes:
        indices: (n_envs, n_viewers, R) int32, the line each ray hit in the env's line order (agent a's model lines at
            a*8 .. a*8+7, then the walls), -1 where it hit nothing.
        locations: (n_envs, n_viewers, R) float32, where along that line, in [0, 1] (0 for a miss).
        dots: (n_envs, n_viewers, R) float32, cosine between the ray and the line (0 for a miss).
        distances: (n_envs, n_viewers, R) float32 metres from the agent's centre (inf for a miss).
        screen: (n_envs, n_viewers, R, 3) float32 linear RGB in [0, 1] (black for a miss).
    """

    indices: jax.Array
    locations: jax.Array
    dots: jax.Array
    distances: jax.Array
    screen: jax.Array


OBSERVATIONS = ("rgb", "depth", "indices", "locations")  # the fields of an Observation


class Observation(NamedTuple):
    """Image columns of each viewing agent's view, W = res // subsample of them, as `core.observe` makes them in
    the render call itself. A field that was not asked for is None.

    Attributes:
        rgb: (n_envs, n_viewers, 1, W, 3) float32, the mean linear RGB of each column's rays, in [0, 1].
        depth: (n_envs, n_viewers, 1, W, 1) float32, the mean over the column's rays of
            1 - clip((distance - AGENT_RADIUS) / max_depth, 0, 1): 1 at the near plane, 0 at max_depth and beyond.
        indices: (n_envs, n_viewers, W) int32, the line the column's middle ray (ray subsample // 2 of it) hit,
            as in `Render.indices`.
        locations: (n_envs, n_viewers, W) float32, where along that line, as in `Render.locations`.
    """

    rgb: jax.Array | None
    depth: jax.Array | None
    indices: jax.Array | None
    locations: jax.Array | None
