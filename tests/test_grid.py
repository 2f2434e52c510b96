"""The per-geometry grids: every wall near a point is on its cell's lists, and searching through them changes no
result of the kernels, bit for bit."""

import dataclasses

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_agents, random_walls
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxstep import core, geometry, grid, scene, toys
from jaxstep.ffi import calls


def _segment_distance(p: np.ndarray, walls: np.ndarray) -> np.ndarray:
    """(W,) metres from point p (2,) to each of walls (W, 2, 2), in float64."""
    a, b = walls[:, 0], walls[:, 1]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0, 1)
    return np.linalg.norm(a + ab * t[:, None] - p, axis=-1)


def _cell_of(frame: np.ndarray, shape: np.ndarray, p: np.ndarray) -> int:
    """The cell the kernels look up for p, in float32 as they do (-1 off the grid)."""
    x, y = (np.float32(p) - frame[:2]) * frame[2]
    if not (0 <= x < shape[0] and 0 <= y < shape[1]):
        return -1
    return int(y) * int(shape[0]) + int(x)


walls_strategy = hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.just(2), st.just(2)),
                            elements=st.floats(-6, 14, allow_nan=False))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(walls=walls_strategy, tiny=st.booleans(), seed=st.integers(0, 2**16))
def test_every_wall_within_a_reach_of_a_point_is_on_its_cells_list(walls, tiny, seed):
    if tiny:  # a wall shorter than a micrometre: listed everywhere, as physics never culls it
        walls = np.concatenate([walls, walls[:1, :1] + [[[0.0, 0.0], [3e-7, 0.0]]]])
    walls = walls[np.linalg.norm(walls[:, 1] - walls[:, 0], axis=-1) > 0]
    if not len(walls):
        return
    g = grid.build([walls])
    frame, shape = g.frames[0], g.shapes[0]
    n_reaches = len(grid.REACHES)
    np.testing.assert_array_equal(frame[3:], np.float32(grid.REACHES))
    rng = np.random.default_rng(seed)
    lo, hi = walls.reshape(-1, 2).min(0), walls.reshape(-1, 2).max(0)
    for p in rng.uniform(lo, hi, (40, 2)):
        c = _cell_of(frame, shape, p)
        assert c >= 0, "a point inside the walls' box is on the grid"
        distance = _segment_distance(np.float32(p).astype(np.float64), walls.astype(np.float32).astype(np.float64))
        for level, reach in enumerate(grid.REACHES):
            i = (shape[2] + c) * n_reaches + level
            listed = g.cell_walls[g.cell_offsets[i] : g.cell_offsets[i + 1]]
            assert (np.diff(listed) > 0).all(), "lists ascend"
            near = np.flatnonzero(distance <= reach)
            assert set(near) <= set(listed), f"walls {set(near) - set(listed)} within {reach} m are not listed"
            if tiny:
                assert len(walls) - 1 in listed


def test_lists_leave_out_far_walls():
    walls = np.array([[[0.0, 0.0], [1.0, 0.0]], [[20.0, 0.0], [21.0, 0.0]]])
    g = grid.build([walls])
    first = g.cell_walls[g.cell_offsets[0] : g.cell_offsets[1]]  # the cell at (0, 0), first reach
    np.testing.assert_array_equal(first, [0])


def test_a_wide_geometry_gets_bigger_cells_not_more_of_them():
    walls = np.array([[[-500.0, 0.0], [500.0, 1.0]], [[0.0, -500.0], [3.0, 500.0]]])
    g = grid.build([walls])
    assert g.shapes[0, 0] <= grid.MAX_CELLS_ACROSS and g.shapes[0, 1] <= grid.MAX_CELLS_ACROSS
    assert 1 / g.frames[0, 2] == pytest.approx(1000 / grid.MAX_CELLS_ACROSS)


def test_packing_of_several_geometries():
    geometries = [toys.box(), toys.column(), random_walls(np.random.default_rng(0), 30)]
    g = grid.build([x["walls"] for x in geometries])
    cells = g.shapes[:, 0] * g.shapes[:, 1]
    np.testing.assert_array_equal(g.shapes[:, 2], np.concatenate([[0], np.cumsum(cells)[:-1]]))
    assert len(g.cell_offsets) == cells.sum() * len(grid.REACHES) + 1
    assert g.cell_offsets[-1] == len(g.cell_walls)
    for k, x in enumerate(geometries):
        n = len(grid.REACHES)
        lists = g.cell_walls[g.cell_offsets[g.shapes[k, 2] * n] : g.cell_offsets[(g.shapes[k, 2] + cells[k]) * n]]
        assert lists.max() < len(x["walls"])


@pytest.fixture(scope="module")
def maze_scenery():
    """Mazes of about 300 walls, enough that views search through the grid, 3 agents each."""
    mazes = geometry.mazes(3, seed=1, size=(24, 24))
    assert min(len(m["walls"]) for m in mazes) > 192
    return scene.scenery([mazes[i % 3] for i in range(24)], n_agents=3)


def _garbled(s: scene.Scenery) -> scene.Scenery:
    """The grid's lists all naming wall 0: a search that uses them must go wrong."""
    return dataclasses.replace(s, cell_walls=jnp.zeros_like(s.cell_walls))


def _maze_agents(s: scene.Scenery, seed: int, speed: float = 3.0) -> core.Agents:
    agents = random_agents(np.random.default_rng(seed), s.n_envs, s.n_agents, lo=0.5, hi=37.0)
    return dataclasses.replace(agents, velocity=agents.velocity * speed)  # speed 3: up to a metre or so a step


def test_views_through_the_grid_equal_views_of_all_walls(maze_scenery):
    agents = _maze_agents(maze_scenery, 0)
    for view in (
        lambda s: core.render(s, agents, res=96, fov=70.0),
        lambda s: core.observe(s, agents, res=96, fov=70.0, subsample=4),
    ):
        with_grid, without = view(maze_scenery), view(scene.without_grid(maze_scenery))
        for a, b in zip(with_grid, without, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(view(_garbled(maze_scenery))[0]), np.asarray(with_grid[0])), (
            "the views should have searched through the grid"
        )


# moves of a few cm to a few m: each picks the least reach whose box holds it (1, 3 or 6 m), or else all walls
@pytest.mark.parametrize("speed", [1.0, 3.0, 30.0])
def test_physics_through_the_grid_equals_physics_of_all_walls(maze_scenery, speed):
    agents = _maze_agents(maze_scenery, 1, speed)
    moved, progress = core.physics(maze_scenery, agents)
    moved_all, progress_all = core.physics(scene.without_grid(maze_scenery), agents)
    for a, b in zip(jax.tree.leaves((moved, progress)), jax.tree.leaves((moved_all, progress_all)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert 0.05 < (np.asarray(progress) < 1).mean() < 1, "some walls should stop some agents"
    _, garbled = core.physics(_garbled(maze_scenery), agents)
    assert not np.array_equal(np.asarray(garbled), np.asarray(progress)), "physics should have used the grid"


def test_walls_stacked_closer_than_the_tie_margin_give_the_same_hit():
    # 1201 walls 0.06 mm apart across the view, the farthest just outside the first reach: each hit is within 1e-4 of
    # the next, so consider_line's near-tie rule carries the farthest wall's effect down the chain
    xs = 3.001 - 6e-5 * np.arange(1201)
    walls = [[[x, -1.0], [x, 1.0]] for x in xs] + [[[-1.0, -1.0], [-1.0, 1.0]]]
    s = scene.scenery([dict(walls=np.array(walls), lights=np.zeros((0, 2)))])
    agents = core.agents(1)  # at the origin, facing the walls
    def view(s):
        return core.render(s, agents, res=32, fov=10.0)

    for a, b in zip(view(s), view(scene.without_grid(s)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_wall_tiny_in_float32_is_listed_everywhere():
    # 11 um long as given, under 10 um once rounded to float32 (at x = 100): the kernels never cull it from physics
    walls = np.array([[[100.02, 100.0], [100.02, 100.0 + 1.1e-5]], [[90.0, 90.0], [90.0, 110.0]]])
    g = grid.build([walls])
    assert (np.bincount(g.cell_walls, minlength=2)[0] == len(g.cell_offsets) - 1), "on every list"
    s = scene.scenery([dict(walls=walls, lights=np.zeros((0, 2)))])
    agents = dataclasses.replace(core.agents(1, positions=jnp.array([96.99, 100.0])),
                                 velocity=jnp.array([[[0.3, 0.0]]], jnp.float32))  # fmt: skip
    for radius in (core.AGENT_RADIUS, 2.9):  # the second reaches the tiny wall
        with_grid, without = (calls.physics(x, agents, 10.0, radius)[1] for x in (s, scene.without_grid(s)))
        np.testing.assert_array_equal(np.asarray(with_grid), np.asarray(without))


def _corrupt(s: scene.Scenery, rng: np.random.Generator) -> scene.Scenery:
    """The grid's frames, offsets and lists scrambled; its shapes kept, so that the scrambled lists are read."""

    def scramble(x, lo, hi):
        return jnp.asarray(rng.integers(lo, hi, x.shape), x.dtype)

    frames = np.asarray(s.grid_frames).copy()
    frames[rng.random(frames.shape) < 0.3] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30])
    return dataclasses.replace(
        s,
        grid_frames=jnp.asarray(frames),
        cell_offsets=scramble(s.cell_offsets, -(2**31), 2**31 - 1),
        cell_walls=scramble(s.cell_walls, -(2**31), 2**31 - 1),
    )


@pytest.mark.parametrize("seed", range(3))
def test_a_corrupt_grid_never_reads_out_of_bounds(maze_scenery, seed):
    bad = _corrupt(maze_scenery, np.random.default_rng(seed))
    agents = _maze_agents(maze_scenery, seed)
    view = core.render(bad, agents, res=64, fov=70.0)
    moved, progress = core.physics(bad, agents)
    n_lines = maze_scenery.n_agents * 8 + maze_scenery.max_walls
    assert ((np.asarray(view.indices) >= -1) & (np.asarray(view.indices) < n_lines)).all()
    assert np.isfinite(np.asarray(view.screen)).all()
    assert ((np.asarray(progress) >= 0) & (np.asarray(progress) <= 1)).all()
    assert np.isfinite(np.asarray(moved.positions)).all()


@pytest.mark.parametrize("shape", [[2**31 - 1, 2**31 - 1, 0], [2**31 - 1, 2**31 - 1, 2**31 - 1], [2**30, 4, 1],
                                   [1, 1, 2**31 - 1], [6000, 6000, 0], [1, 1, 6200]])
def test_grid_shapes_whose_cell_count_overflows_are_refused(maze_scenery, shape):
    bad = dataclasses.replace(maze_scenery, grid_shapes=jnp.asarray([shape] * maze_scenery.n_geometries, jnp.int32))
    agents = _maze_agents(maze_scenery, 5)
    # no grid to read: the same results as with all walls
    for run in (lambda s: core.physics(s, agents)[1], lambda s: core.render(s, agents, res=32).indices):
        np.testing.assert_array_equal(np.asarray(run(bad)), np.asarray(run(maze_scenery)))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("grid_frames", jnp.zeros((1, 2)), r"grid_frames: expected 3 \+ n_reaches columns"),
        ("grid_shapes", jnp.zeros((1, 4), jnp.int32), "grid_shapes: trailing dimension 1 must be 3"),
        ("cell_offsets", jnp.zeros(0, jnp.int32), "cell_offsets: needs at least one entry"),
    ],
)
def test_bad_grid_buffers_are_named(field, value, message):
    s = dataclasses.replace(scene.scenery([toys.box()]), **{field: value})
    agents = core.agents(1)
    with pytest.raises(Exception, match=message):
        jax.block_until_ready(core.physics(s, agents))
    with pytest.raises(Exception, match=message):
        jax.block_until_ready(core.render(s, agents, res=8).indices)
