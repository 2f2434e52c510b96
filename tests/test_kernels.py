"""The FFI kernels on the CPU against the pure-JAX reference, and against megastep's numbers."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mixed_geometries, random_agents, random_walls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_checks import assert_observations_close, assert_physics_close, assert_renders_close

from jaxstep import core, modules, scene, toys
from jaxstep.ffi import calls, reference

BACKENDS = ("ffi", "reference")


def at_rest(positions, angles) -> core.Agents:
    positions = np.asarray(positions, np.float32)
    return core.agents(positions.shape[0], positions.shape[1], positions=positions, angles=np.asarray(angles))


def moving(positions, velocity, angles=0.0, angvelocity=0.0) -> core.Agents:
    a = at_rest(positions, np.broadcast_to(angles, np.shape(positions)[:2]))
    return dataclasses.replace(
        a,
        velocity=jnp.asarray(velocity, jnp.float32),
        angvelocity=jnp.broadcast_to(jnp.asarray(angvelocity, jnp.float32), a.angles.shape),
    )


# ---------------------------------------------------------------------------------------------------------
# FFI against the reference


def test_render_matches_reference(mixed_scenery):
    agents = random_agents(np.random.default_rng(1), 32, 3)
    ffi = core.render(mixed_scenery, agents, res=96)
    ref = core.render(mixed_scenery, agents, res=96, backend="reference")
    assert_renders_close(ffi, ref)
    hits = np.asarray(ffi.indices)
    assert (hits >= 24).any() and ((hits >= 0) & (hits < 24)).any(), "want both wall and agent hits"


def test_physics_matches_reference(mixed_scenery):
    agents = random_agents(np.random.default_rng(2), 32, 3)
    ffi = core.physics(mixed_scenery, agents, fps=10)
    ref = core.physics(mixed_scenery, agents, fps=10, backend="reference")
    assert_physics_close(ffi, ref)
    progress = np.asarray(ffi[1])
    assert (progress < 1).any() and (progress == 1).any(), "want both free and blocked agents"


def test_bake_matches_reference(mixed_scenery):
    rng = np.random.default_rng(3)
    s = mixed_scenery
    points = jnp.asarray(rng.uniform(0, 10, (500, 2)), jnp.float32)
    geometry = jnp.asarray(rng.integers(0, s.n_geometries, 500), jnp.int32)
    ffi = calls.bake(points, geometry, s.walls, s.wall_offsets, s.lights, s.light_offsets)
    ref = reference.bake(dataclasses.replace(s, env_geometry=geometry), points, geometry)
    np.testing.assert_allclose(ffi, ref, atol=1e-6)


def test_scenery_bakes_the_same_with_either_backend():
    geometries = mixed_geometries(5)
    ffi = scene.scenery(geometries, backend="ffi")
    ref = scene.scenery(geometries, backend="reference")
    np.testing.assert_allclose(ffi.baked, ref.baked, atol=1e-6)
    np.testing.assert_array_equal(ffi.texels, ref.texels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_equals_eager(mixed_scenery, backend):
    agents = random_agents(np.random.default_rng(4), 32, 3)
    eager = core.render(mixed_scenery, agents, res=32, backend=backend)
    jitted = jax.jit(lambda s, a: core.render(s, a, res=32, backend=backend))(mixed_scenery, agents)
    np.testing.assert_array_equal(eager.indices, jitted.indices)
    np.testing.assert_allclose(eager.screen, jitted.screen, atol=1e-5)


def test_vmap_over_batches_of_agents(mixed_scenery):
    rng = np.random.default_rng(5)
    batch = [random_agents(rng, 32, 3) for _ in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)

    renders = jax.vmap(lambda a: core.render(mixed_scenery, a, res=16))(stacked)
    moved, progress = jax.vmap(lambda a: core.physics(mixed_scenery, a))(stacked)
    assert renders.screen.shape == (3, 32, 3, 16, 3)
    for i, agents in enumerate(batch):
        ref = core.render(mixed_scenery, agents, res=16, backend="reference")
        assert_renders_close(jax.tree.map(lambda x, i=i: x[i], renders), ref)
        ref_agents, ref_progress = core.physics(mixed_scenery, agents, backend="reference")
        assert_physics_close((jax.tree.map(lambda x, i=i: x[i], moved), progress[i]), (ref_agents, ref_progress))


def _rollout(scenery, agents, velocities, backend):
    """Steps physics + render in a lax.scan; velocities (T, n_envs, n_agents, 2) are set before each step.
    Returns each step's agents before and after it, its progress and its render."""

    def step(agents, velocity):
        before = dataclasses.replace(agents, velocity=velocity)
        agents, progress = core.physics(scenery, before, fps=10, backend=backend)
        return agents, (before, agents, progress, core.render(scenery, agents, res=16, backend=backend))

    return jax.jit(lambda a, v: jax.lax.scan(step, a, v))(agents, velocities)


def test_scan_of_100_steps_matches_reference():
    # Every step of the FFI's trajectory is checked against the reference run from the FFI's own state before that
    # step, so rounding differences (fused multiply-adds on a GPU) cannot grow along the trajectory.
    geometries = mixed_geometries(6)
    s = scene.scenery([geometries[i % 4] for i in range(8)], n_agents=2)
    rng = np.random.default_rng(6)
    agents = random_agents(rng, 8, 2, lo=2.5, hi=4.5)
    velocities = jnp.asarray(rng.normal(size=(100, 8, 2, 2)) * 5, jnp.float32)
    _, (before, after, progress, render) = _rollout(s, agents, velocities, "ffi")
    ref_after, ref_progress = jax.jit(jax.vmap(lambda a: core.physics(s, a, fps=10, backend="reference")))(before)
    assert_physics_close((after, progress), (ref_after, ref_progress))
    # the render of the FFI's own poses, so that the same scene is compared
    ref_render = jax.jit(jax.vmap(lambda a: core.render(s, a, res=16, backend="reference")))(after)
    assert_renders_close(render, ref_render, atol=1e-3)
    assert (np.asarray(progress) < 1).mean() > 0.05, "agents should often be stopped by walls or each other"


def test_vmap_inside_scan():
    s = scene.scenery([toys.box()] * 4, n_agents=1)
    rng = np.random.default_rng(7)
    agents = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_agents(rng, 4, 1, 2, 5) for _ in range(2)])
    velocities = jnp.asarray(rng.normal(size=(10, 2, 4, 1, 2)) * 20, jnp.float32)

    def step(agents, v):
        agents, _ = jax.vmap(lambda a, v: core.physics(s, dataclasses.replace(a, velocity=v)))(agents, v)
        return agents, agents.positions

    _, ffi = jax.lax.scan(step, agents, velocities)
    for b in range(2):
        ref_agents = jax.tree.map(lambda x, b=b: x[b], agents)
        _, (_, ref, _, _) = _rollout(s, ref_agents, velocities[:, b], "reference")
        np.testing.assert_allclose(ffi[:, b], ref.positions, atol=1e-3)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), res=st.sampled_from([1, 7, 64]))
def test_random_poses_in_random_walls(seed, res):
    rng = np.random.default_rng(seed)
    geometries = [random_walls(rng, 12), random_walls(rng, 25, n_lights=2)]
    s = scene.scenery([geometries[i % 2] for i in range(6)], n_agents=2, seed=seed)
    agents = random_agents(rng, 6, 2, lo=0.5, hi=9.5)
    assert_renders_close(core.render(s, agents, res=res), core.render(s, agents, res=res, backend="reference"))
    assert_physics_close(core.physics(s, agents), core.physics(s, agents, backend="reference"))


# ---------------------------------------------------------------------------------------------------------
# megastep's semantics


@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_agent_stops_short_of_the_box_wall(backend):
    s = scene.scenery([toys.box()])
    agents, progress = core.physics(s, moving([[[3.0, 3.0]]], [[[1000.0, 0.0]]]), fps=10, backend=backend)
    x, y = np.asarray(agents.positions)[0, 0]
    assert x == pytest.approx(5.8649, abs=1e-3)
    assert y == pytest.approx(3.0, abs=1e-6)
    assert float(progress[0, 0]) < 1
    np.testing.assert_array_equal(agents.velocity, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_free_move_keeps_velocity_and_wraps_angle(backend):
    s = scene.scenery([toys.box()])
    agents, progress = core.physics(s, moving([[[3.0, 3.0]]], [[[1.0, 2.0]]], 170.0, 200.0), fps=10, backend=backend)
    np.testing.assert_allclose(agents.positions, [[[3.1, 3.2]]], atol=1e-6)
    np.testing.assert_allclose(agents.velocity, [[[1.0, 2.0]]])
    np.testing.assert_allclose(agents.angles, [[-170.0]], atol=1e-4)
    np.testing.assert_allclose(agents.angvelocity, [[200.0]])
    assert float(progress[0, 0]) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_on_agents_stop_apart(backend):
    s = scene.scenery([toys.box()], n_agents=2)
    agents = moving([[[2.0, 3.5], [3.0, 3.5]]], [[[5.0, 0.0], [-5.0, 0.0]]], angvelocity=90.0)
    moved, progress = core.physics(s, agents, fps=10, backend=backend)
    p = np.asarray(moved.positions)[0]
    assert np.linalg.norm(p[0] - p[1]) >= 2 * core.AGENT_RADIUS
    assert np.linalg.norm(p[0] - p[1]) < 2 * core.AGENT_RADIUS * 1.1, "stops just short"
    assert (np.asarray(progress) < 1).all()
    np.testing.assert_array_equal(moved.velocity, 0.0)
    np.testing.assert_array_equal(moved.angvelocity, 0.0)
    # they turn by the same fraction of their step as they move
    np.testing.assert_allclose(moved.angles, np.asarray(progress) * 90.0 / 10, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_centre_of_box_sees_right_wall(backend):
    s = scene.scenery([toys.box()])
    out = core.render(s, at_rest([[[3.5, 3.5]]], [[0.0]]), res=2, fov=90, backend=backend)
    # rays at +-tan(45)/2 from straight ahead hit the right wall (wall 3, after the 8 model lines) 2.5 m away
    np.testing.assert_array_equal(out.indices, [[[11, 11]]])
    np.testing.assert_allclose(out.distances, 2.5 * np.sqrt(1 + 0.5**2), rtol=1e-5)
    # wall 3 runs from (6, 1) up to (6, 6); the rays meet it at y = 3.5 +- 1.25
    np.testing.assert_allclose(out.locations, [[[0.75, 0.25]]], atol=1e-5)
    np.testing.assert_allclose(np.abs(out.dots), 0.5 / np.sqrt(1.25), atol=1e-5)
    assert (np.asarray(out.screen) > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_agents_see_each_other(backend):
    s = scene.scenery([toys.box()], n_agents=2)
    agents = at_rest([[[2.0, 3.5], [3.0, 3.5]]], [[0.0, 180.0]])
    out = core.render(s, agents, res=8, fov=4, backend=backend)
    # each looks straight at the other's front (model line 2, dark grey) 1 m minus the model's half width away
    np.testing.assert_array_equal(out.indices[0, 0], 8 + 2)
    np.testing.assert_array_equal(out.indices[0, 1], 0 + 2)
    np.testing.assert_allclose(out.distances[0, :, 4], 1 - 0.075, atol=1e-3)
    screen = np.asarray(out.screen)[0]
    np.testing.assert_allclose(screen[..., 0], screen[..., 1], rtol=1e-5)  # grey


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_agent_does_not_see_its_own_model(backend):
    s = scene.scenery([toys.box()], n_agents=1)
    out = core.render(s, at_rest([[[3.5, 3.5]]], [[37.0]]), res=64, backend=backend)
    assert (np.asarray(out.indices) >= 8).all()


def test_misses_are_black_and_finite():
    s = scene.scenery([toys.column()])
    out = core.render(s, at_rest([[[1.5, 1.5]]], [[180.0]]), res=16)  # facing away from the column
    np.testing.assert_array_equal(out.indices, -1)
    np.testing.assert_array_equal(out.screen, 0.0)
    assert np.isinf(np.asarray(out.distances)).all()
    np.testing.assert_array_equal(out.locations, 0.0)


def test_bake_lights_and_shadows():
    walls = jnp.asarray([[[1.0, -1.0], [1.0, 1.0]]], jnp.float32)  # a wall across x = 1
    lights = jnp.asarray([[0.0, 0.0, 1.0]], jnp.float32)
    offsets = jnp.asarray([0, 1], jnp.int32)
    points = jnp.asarray([[0.0, 2.0], [0.0, 0.5], [2.0, 0.0]], jnp.float32)
    light = calls.bake(points, jnp.zeros(3, jnp.int32), walls, offsets, lights, offsets)
    # 0.1 ambient + 2 I / max(d^2, 1), clamped to 1; the third point is behind the wall
    np.testing.assert_allclose(light, [0.1 + 2 / 4, 1.0, 0.1], atol=1e-6)


def test_scenery_packs_distinct_geometries_once():
    box, column = toys.box(), toys.column()
    s = scene.scenery([box, column, box, toys.box(), column], n_agents=2)
    np.testing.assert_array_equal(s.env_geometry, [0, 1, 0, 0, 1])
    assert s.n_geometries == 2 and s.walls.shape == (8, 2, 2)
    np.testing.assert_array_equal(s.wall_offsets, [0, 4, 8])
    # 8 model lines of 2 texels, then one texel per 5 cm of wall
    counts = np.diff(np.asarray(s.texel_offsets))
    np.testing.assert_array_equal(counts[:8], 2)
    np.testing.assert_array_equal(counts[8:12], 100)
    lights = np.asarray(s.lights)
    assert lights.shape == (5, 3) and ((lights[:, 2] >= 0.5) & (lights[:, 2] <= 2)).all()
    baked = np.asarray(s.baked)[16:]
    assert ((baked >= 0.1) & (baked <= 1)).all()


def test_scenery_is_deterministic_per_seed():
    a, b, c = (scene.scenery([toys.box()], seed=seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(a.texels, b.texels)
    assert not np.array_equal(a.texels, c.texels)


# ---------------------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def box_scenery():
    return scene.scenery([toys.box()] * 2, n_agents=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(res=0), "res"),
        (dict(res=2.5), "res"),
        (dict(fov=180), "fov"),
        (dict(fov=-5), "fov"),
        (dict(backend="cuda"), "backend"),
    ],
)
def test_render_rejects_bad_arguments(box_scenery, kwargs, match):
    with pytest.raises(ValueError, match=match):
        core.render(box_scenery, core.agents(2, 1), **kwargs)


def test_rejects_agents_of_the_wrong_shape(box_scenery):
    with pytest.raises(ValueError, match=r"agents.positions.*\(2, 1, 2\)"):
        core.render(box_scenery, dataclasses.replace(core.agents(2, 1), positions=jnp.zeros((2, 1, 3))))
    with pytest.raises(ValueError, match="agents.angles"):
        core.physics(box_scenery, core.agents(3, 1))
    with pytest.raises(ValueError, match="fps"):
        core.physics(box_scenery, core.agents(2, 1), fps=0)
    with pytest.raises(TypeError, match="angles"):
        bad = dataclasses.replace(core.agents(2, 1), angles=jnp.zeros((2, 1), bool))
        core.physics(box_scenery, bad)


@pytest.mark.parametrize(
    "geometries, match",
    [
        ([], "empty"),
        (toys.box(), "list"),
        ([dict(walls=np.zeros((2, 2)), lights=np.zeros((1, 2)))], "walls"),
        ([dict(walls=np.full((1, 2, 2), np.nan), lights=np.zeros((1, 2)))], "finite"),
        ([dict(walls=np.ones((1, 2, 2)), lights=np.zeros((1, 2)))], "zero-length"),
        ([{"lights": np.zeros((1, 2))}], "walls"),
    ],
)
def test_scenery_rejects_bad_geometries(geometries, match):
    with pytest.raises(ValueError, match=match):
        scene.scenery(geometries)


def test_scenery_rejects_bad_n_agents():
    with pytest.raises(ValueError, match="n_agents"):
        scene.scenery([toys.box()], n_agents=0)


def test_handlers_check_shapes_too(box_scenery):
    # bypass the Python checks: the C++ handler must refuse rather than read out of bounds
    bad = dataclasses.replace(box_scenery, env_geometry=box_scenery.env_geometry[:1])
    with pytest.raises(Exception, match="env_geometry"):
        jax.block_until_ready(calls.physics(bad, core.agents(2, 1), 10.0, core.AGENT_RADIUS))


def test_out_of_range_geometry_index_renders_nothing(box_scenery):
    bad = dataclasses.replace(box_scenery, env_geometry=jnp.asarray([0, 7], jnp.int32))
    out = calls.render(bad, core.agents(2, 1, positions=jnp.full((2, 1, 2), 3.0)), 8, 1.0, core.AGENT_RADIUS)
    assert (np.asarray(out[0][0]) >= 8).all()
    np.testing.assert_array_equal(out[0][1], -1)


# ---------------------------------------------------------------------------------------------------------
# Views: which agents' views are rendered (n_viewers, mask), and the culling of lines per 32 rays


@pytest.mark.parametrize("backend", BACKENDS)
def test_n_viewers_renders_the_first_agents_views_only(mixed_scenery, backend):
    agents = random_agents(np.random.default_rng(5), 32, 3)
    full = core.render(mixed_scenery, agents, res=40, backend=backend)
    first = core.render(mixed_scenery, agents, res=40, backend=backend, n_viewers=2)
    assert first.indices.shape == (32, 2, 40) and first.screen.shape == (32, 2, 40, 3)
    for name in ("indices", "locations", "dots", "distances", "screen"):
        np.testing.assert_array_equal(getattr(first, name), getattr(full, name)[:, :2], err_msg=name)
    # the third agent is not a viewer, but it is still seen
    assert ((np.asarray(first.indices) >= 16) & (np.asarray(first.indices) < 24)).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_views_are_empty_and_the_rest_unchanged(mixed_scenery, backend):
    agents = random_agents(np.random.default_rng(6), 32, 3)
    mask = np.random.default_rng(7).random((32, 3)) < 0.5
    full = core.render(mixed_scenery, agents, res=24, backend=backend)
    part = core.render(mixed_scenery, agents, res=24, backend=backend, mask=jnp.asarray(mask))
    for name in ("indices", "locations", "dots", "distances", "screen"):
        np.testing.assert_array_equal(np.asarray(getattr(part, name))[mask], np.asarray(getattr(full, name))[mask])
    np.testing.assert_array_equal(np.asarray(part.indices)[~mask], -1)
    assert np.isinf(np.asarray(part.distances)[~mask]).all()
    assert (np.asarray(part.screen)[~mask] == 0).all() and (np.asarray(part.locations)[~mask] == 0).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_viewers=0), ValueError, "n_viewers"),
        (dict(n_viewers=2), ValueError, "n_viewers"),
        (dict(n_viewers=1.0), ValueError, "n_viewers"),
        (dict(mask=np.ones((2, 2), bool)), ValueError, r"mask.*\(2, 1\)"),
        (dict(mask=np.ones((2, 1), np.int32)), TypeError, "mask"),
    ],
)
def test_render_rejects_bad_views(box_scenery, kwargs, error, match):
    with pytest.raises(error, match=match):
        core.render(box_scenery, core.agents(2, 1), **kwargs)


@pytest.mark.parametrize("res", [33, 64, 96])
def test_lines_at_the_edges_of_a_32_ray_chunk_are_not_culled(res):
    # Each env holds one short wall that just crosses the direction of a ray at the edge of a 32-ray chunk (the
    # CUDA warp's share, also the CPU's culling unit), seen from near and far, reaching out either side of it.
    half_width = float(np.float32(np.tan(np.radians(65.0))))
    rays = [r for r in (0, 31, 32, 63, 64, res - 1) if r < res]
    geometries, expected = [], []
    for r in rays:
        y = (res - 2 * r - 1) * half_width / res
        direction = np.array([1.0, y]) / np.hypot(1.0, y)
        normal = np.array([-direction[1], direction[0]])
        for distance in (0.5, 3.0, 40.0):
            for side in (1.0, -1.0):
                end = distance * direction
                wall = np.array([end - side * 1e-5 * distance * normal, end + side * 0.2 * normal])
                geometries.append(dict(walls=wall[None], lights=np.array([[0.0, 5.0]])))
                expected.append(r)
    s = scene.scenery(geometries, n_agents=1)
    agents = core.agents(len(geometries), 1)
    ffi = core.render(s, agents, res=res, fov=130.0)
    assert_renders_close(ffi, core.render(s, agents, res=res, fov=130.0, backend="reference"))
    np.testing.assert_array_equal(np.asarray(ffi.indices)[np.arange(len(expected)), 0, expected], 8)


# ---------------------------------------------------------------------------------------------------------
# Observe: render and image columns in one call


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("subsample", [1, 3, 4, 32, 48])  # 48: more than a warp's rays, rendered then averaged
def test_observe_is_render_then_columns(mixed_scenery, backend, subsample):
    agents = random_agents(np.random.default_rng(4), 32, 3)
    res = 96
    view = core.render(mixed_scenery, agents, res=res, fov=100.0, backend=backend)
    obs = core.observe(mixed_scenery, agents, res=res, fov=100.0, backend=backend, subsample=subsample, max_depth=4.0)
    w = res // subsample
    assert obs.rgb.shape == (32, 3, 1, w, 3) and obs.depth.shape == (32, 3, 1, w, 1)
    np.testing.assert_allclose(obs.rgb, modules.rgb(view, subsample), atol=1e-6)
    np.testing.assert_allclose(obs.depth, modules.depth(view, subsample, max_depth=4.0), atol=1e-6)
    middle = np.arange(w) * subsample + subsample // 2
    np.testing.assert_array_equal(obs.indices, np.asarray(view.indices)[..., middle])
    np.testing.assert_array_equal(obs.locations, np.asarray(view.locations)[..., middle])
    assert (np.asarray(obs.depth) > 0).any() and (np.asarray(obs.depth) < 1).any()


@pytest.mark.parametrize("subsample", [1, 4])
def test_observe_matches_reference(mixed_scenery, subsample):
    agents = random_agents(np.random.default_rng(5), 32, 3)
    mask = np.random.default_rng(6).random((32, 2)) < 0.7
    kwargs = dict(res=64, n_viewers=2, mask=mask, subsample=subsample)
    ffi = core.observe(mixed_scenery, agents, **kwargs)
    assert_observations_close(ffi, core.observe(mixed_scenery, agents, backend="reference", **kwargs))
    # views not wanted come back as misses would make them
    assert (np.asarray(ffi.indices)[~mask] == -1).all() and (np.asarray(ffi.locations)[~mask] == 0).all()
    assert (np.asarray(ffi.rgb)[~mask] == 0).all() and (np.asarray(ffi.depth)[~mask] == 0).all()
    assert (np.asarray(ffi.indices)[mask] >= 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_observe_makes_only_the_outputs_asked_for(mixed_scenery, backend):
    agents = random_agents(np.random.default_rng(7), 32, 3)
    obs = core.observe(mixed_scenery, agents, res=32, subsample=2, backend=backend, outputs=("rgb", "indices"))
    assert obs.depth is None and obs.locations is None
    full = core.observe(mixed_scenery, agents, res=32, subsample=2, backend=backend)
    np.testing.assert_array_equal(obs.rgb, full.rgb)
    np.testing.assert_array_equal(obs.indices, full.indices)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(subsample=5), "subsample: must divide res"),
        (dict(subsample=0), "subsample"),
        (dict(subsample=128), "subsample"),
        (dict(max_depth=0.0), "max_depth"),
        (dict(max_depth=1e39), "max_depth"),  # inf as a float32
        (dict(max_depth=1e-50), "max_depth"),  # 0 as a float32
        (dict(outputs=()), "outputs"),
        (dict(outputs=("rgb", "colour")), "outputs"),
    ],
)
def test_observe_rejects_bad_arguments(box_scenery, kwargs, match):
    with pytest.raises(ValueError, match=match):
        core.observe(box_scenery, core.agents(2, 1), res=64, **kwargs)


def test_observe_handler_checks_subsample_too(box_scenery):
    # the Python boundary checks first; the handler refuses what the kernel cannot do rather than misbehave
    half_width = float(np.tan(np.radians(65.0)))
    with pytest.raises(Exception, match="subsample"):
        jax.block_until_ready(calls.observe(box_scenery, core.agents(2, 1), 64, half_width, 0.1, subsample=64))


# ---------------------------------------------------------------------------------------------------------
# Physics: no pair of agents ends a step overlapping unless it started so and got no nearer


@pytest.mark.parametrize("backend", BACKENDS)
def test_agents_that_start_overlapping_can_move_apart(backend):
    s = scene.scenery([toys.box()], n_agents=2)
    agents = moving([[[3.0, 3.0], [3.1, 3.0]]], [[[-2.0, 0.0], [2.0, 0.0]]])
    moved, progress = core.physics(s, agents, 10.0, backend)
    np.testing.assert_array_equal(progress, [[1.0, 1.0]])
    np.testing.assert_allclose(moved.positions, [[[2.8, 3.0], [3.3, 3.0]]], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("leader", [0, 1])
def test_a_follower_stops_behind_a_leader_that_a_wall_stopped(backend, leader):
    # a wall at x = 6 stops the leader short; the follower, assuming the leader moves on, would run into it (and,
    # were the leader held where it was, through it). Whichever index the leader has, it reaches the wall and the
    # follower stops behind it.
    s = scene.scenery([toys.box()], n_agents=3)
    starts = [[5.5, 3.5], [5.2, 3.5]] if leader == 0 else [[5.2, 3.5], [5.5, 3.5]]
    agents = moving([starts + [[2.0, 2.0]]], [[[20.0, 0.0], [20.0, 0.0], [0.0, 5.0]]])
    moved, progress = core.physics(s, agents, 10.0, backend)
    p, x = np.asarray(progress)[0], np.asarray(moved.positions)[0, :, 0]
    follower = 1 - leader
    radius = core.AGENT_RADIUS
    np.testing.assert_allclose(x[leader], 6 - 1.001 * radius, atol=0.01, err_msg="the leader reaches the wall")
    assert x[follower] < x[leader] - 2 * radius, f"the follower stops behind the leader: {x}"
    assert x[follower] > 5.6, f"and close behind it, not held where it was: {x}"
    assert 0 < p[follower] < 1 and p[2] == 1, p


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_follower_a_rounding_error_faster_than_its_leader_moves_freely(backend):
    # a relative velocity of one float32 ulp (as a fused multiply-add can leave of equal velocities) must read as
    # "never catches up", not as a collision at fraction 0
    s = scene.scenery([toys.box()], n_agents=2)
    faster = float(np.nextafter(np.float32(20.0), np.float32(np.inf)))
    agents = moving([[[2.5, 3.5], [2.2, 3.5]]], [[[20.0, 0.0], [faster, 0.0]]])
    moved, progress = core.physics(s, agents, 10.0, backend)
    np.testing.assert_array_equal(progress, [[1.0, 1.0]])
    np.testing.assert_allclose(np.asarray(moved.positions)[0, :, 0], [4.5, 4.2], atol=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_walls_just_beside_a_move_stop_it_as_the_reference_says(seed):
    # the kernels skip walls outside a box around each move (kernels.h, sweep_box); the reference checks every wall.
    # One short wall per env, scattered about the move's box edges, so many lie just inside or just outside it.
    rng = np.random.default_rng(seed)
    n = 128
    p = rng.uniform(4, 6, (n, 2))
    v = rng.normal(size=(n, 2))
    v *= rng.uniform(0.01, 2.0, (n, 1)) / np.linalg.norm(v, axis=1, keepdims=True)  # metres this step (fps = 1)
    centre = p + rng.uniform(-0.4, 1.4, (n, 1)) * v + rng.normal(size=(n, 2)) * 0.2
    d = rng.normal(size=(n, 2))
    d *= rng.uniform(0.01, 0.4, (n, 1)) / np.linalg.norm(d, axis=1, keepdims=True)
    walls = np.stack([centre - d, centre + d], 1)
    s = scene.scenery([dict(walls=walls[i : i + 1], lights=np.zeros((0, 2))) for i in range(n)])
    agents = moving(p[:, None], v[:, None])
    ffi = core.physics(s, agents, fps=1.0)
    assert_physics_close(ffi, core.physics(s, agents, fps=1.0, backend="reference"))
    progress = np.asarray(ffi[1])
    assert (progress < 1).sum() > 5 and (progress == 1).sum() > 5, "want both free and blocked moves"


@pytest.mark.parametrize(
    "p, v, wall",
    [
        ((6.97959614, 0.550500095), (1.01306236, -1.28682303),
         ((8.65383434, -0.213929698), (8.65383434, -0.213929608))),
        ((2.35070324, 3.52737713), (0.069849588, -0.0133947926),
         ((2.36940193, 3.2969048), (2.36940145, 3.2969048))),
    ],
)  # fmt: skip
def test_a_wall_shorter_than_a_micrometre_is_never_culled(p, v, wall):
    # the collision test adds 1e-6 to a wall's length, so such a wall can stop a move from outside its box
    s = scene.scenery([dict(walls=np.array([wall], np.float32), lights=np.zeros((0, 2)))])
    agents = moving(np.array([[p]], np.float32), np.array([[v]], np.float32))
    ffi, ref = core.physics(s, agents, fps=1.0), core.physics(s, agents, fps=1.0, backend="reference")
    assert float(ref[1][0, 0]) < 0.6, "the reference stops it"
    assert_physics_close(ffi, ref)


def test_an_agents_own_model_lies_inside_its_near_plane():
    # the kernels skip a viewer's own model lines on this ground (kernels.h, hidden_own_line): the farthest model
    # point from the centre is MODEL_REACH = 0.0839 m, well inside the near plane at AGENT_RADIUS
    reach = np.linalg.norm(reference.MODEL, axis=-1).max()
    np.testing.assert_allclose(reach, core.AGENT_WIDTH / 2 * np.sqrt(1.25), rtol=1e-6)
    assert reach < 0.8 * core.AGENT_RADIUS


@pytest.mark.parametrize("radius", [0.05, core.AGENT_RADIUS])
def test_own_model_lines_are_seen_only_with_a_near_plane_inside_the_model(radius):
    # with a near plane inside the model, the FFI must not skip the viewer's own lines: every ray then hits one
    s = scene.scenery([toys.box()], n_agents=2)
    agents = random_agents(np.random.default_rng(3), 1, 2, lo=2.5, hi=4.5)
    half_width = float(np.tan(np.radians(130.0) / 2))
    ffi = core.Render(*calls.render(s, agents, 32, half_width, radius))
    ref = core.Render(*reference.render(s, agents, 32, half_width, radius))
    assert_renders_close(ffi, ref)
    indices = np.asarray(ffi.indices)[0]  # (viewer, ray)
    own = indices // reference.MODEL_LINES == np.arange(2)[:, None]
    assert own.all() if radius < 0.08 else not own.any()


def test_closest_approach_follows_agents_until_their_progress_runs_out():
    before = jnp.asarray([[[0.0, 0.0], [1.0, 0.0]]])
    move = jnp.asarray([[[1.0, 0.0], [-1.0, 0.0]]])  # head-on, swapping places over a full step
    d = core.closest_approach(before, move, jnp.asarray([[1.0, 1.0]]))
    np.testing.assert_allclose(d[0], [[np.inf, 0.0], [0.0, np.inf]], atol=1e-6)
    # the first stops a quarter of the way in, the second runs on to where the first started: they pass at 0.25
    d = core.closest_approach(before, move, jnp.asarray([[0.25, 1.0]]))
    np.testing.assert_allclose(d[0, 0, 1], 0.0, atol=1e-6)
    # both stop at a fifth: 0.6 apart at the end, and never nearer
    d = core.closest_approach(before, move, jnp.asarray([[0.2, 0.2]]))
    np.testing.assert_allclose(d[0, 0, 1], 0.6, atol=1e-6)
