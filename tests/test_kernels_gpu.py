"""The CUDA kernels against the CPU kernels (run with `pytest -m gpu` on a machine with a CUDA GPU)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mixed_geometries, random_agents, random_walls
from kernel_checks import assert_observations_close, assert_physics_close, assert_renders_close

from jaxstep import core, scene, toys
from jaxstep.ffi import reference

pytestmark = pytest.mark.gpu


def on(device_kind: str, tree):
    return jax.device_put(tree, jax.devices(device_kind)[0])


def both(tree):
    return on("gpu", tree), on("cpu", tree)


@pytest.fixture(scope="module")
def big_scenery():
    """1000 envs (not a multiple of any block size) over four geometries, 4 agents each."""
    geometries = mixed_geometries(11)
    return scene.scenery([geometries[i % 4] for i in range(1000)], n_agents=4)


def test_handlers_are_registered_for_cuda():
    from jaxstep.ffi import calls

    assert "cuda" in calls.register()


def test_render_cuda_matches_cpu(big_scenery):
    agents = random_agents(np.random.default_rng(0), 1000, 4)
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((big_scenery, agents))
    gpu = core.render(s_gpu, a_gpu, res=128)
    assert gpu.screen.devices() == {jax.devices("gpu")[0]}
    assert_renders_close(jax.device_get(gpu), jax.device_get(core.render(s_cpu, a_cpu, res=128)))


def test_physics_cuda_matches_cpu(big_scenery):
    agents = random_agents(np.random.default_rng(1), 1000, 4)
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((big_scenery, agents))
    assert_physics_close(jax.device_get(core.physics(s_gpu, a_gpu)), jax.device_get(core.physics(s_cpu, a_cpu)))


def test_many_agents_per_env_cuda_matches_cpu():
    # more agents than threads in a block's worth of envs
    s = scene.scenery([toys.box()] * 3, n_agents=300)
    agents = random_agents(np.random.default_rng(2), 3, 300, lo=1.2, hi=5.8)
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((s, agents))
    assert_physics_close(jax.device_get(core.physics(s_gpu, a_gpu)), jax.device_get(core.physics(s_cpu, a_cpu)))
    assert_renders_close(jax.device_get(core.render(s_gpu, a_gpu, res=16)), core.render(s_cpu, a_cpu, res=16))


@pytest.mark.parametrize("n_agents", [1, 2, 3, 5, 9])  # 4, 8, 8, 8 and 16 threads per agent
def test_physics_in_a_small_geometry_cuda_matches_cpu(n_agents):
    # a box's 4 walls and few agents: fewer than 32 threads per agent, several agents sharing a warp, and a last
    # warp only partly filled (1001 envs)
    s = scene.scenery([toys.box()] * 1001, n_agents=n_agents)
    agents = random_agents(np.random.default_rng(n_agents), 1001, n_agents, lo=1.2, hi=5.8)
    agents = dataclasses.replace(agents, velocity=agents.velocity * 10)  # into the walls often
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((s, agents))
    gpu, cpu = jax.device_get(core.physics(s_gpu, a_gpu)), jax.device_get(core.physics(s_cpu, a_cpu))
    assert_physics_close(gpu, cpu)
    assert (gpu[1] < 1).mean() > 0.1, "the walls should stop many agents"


@pytest.mark.parametrize("n_agents", [1, 3])
def test_physics_among_dense_walls_cuda_matches_cpu(n_agents):
    # hundreds of walls and long moves: dozens of walls near each move, so a warp's queue of full wall tests fills
    # and is run many times over
    rng = np.random.default_rng(29 + n_agents)
    geometries = [random_walls(rng, 400, n_lights=1), random_walls(rng, 250, n_lights=1)]
    s = scene.scenery([geometries[i % 2] for i in range(515)], n_agents=n_agents)
    agents = random_agents(rng, 515, n_agents, lo=1.0, hi=9.0)
    agents = dataclasses.replace(agents, velocity=agents.velocity * 8)  # metres a step of about 2.4 (fps 10)
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((s, agents))
    gpu, cpu = jax.device_get(core.physics(s_gpu, a_gpu)), jax.device_get(core.physics(s_cpu, a_cpu))
    assert_physics_close(gpu, cpu)
    assert 0.2 < (gpu[1] < 1).mean() < 1, "the walls should stop many agents, not all"


def test_grid_search_and_physics_cuda_match_cpu():
    # mazes of about 300 walls: physics reads the cells' lists (2 lanes an agent) and views search through the
    # grid's passes, on both devices, with the same results as without them
    from jaxstep import geometry

    mazes = geometry.mazes(3, seed=2, size=(24, 24))
    s = scene.scenery([mazes[i % 3] for i in range(300)], n_agents=3)
    agents = random_agents(np.random.default_rng(7), 300, 3, lo=0.5, hi=37.0)
    agents = dataclasses.replace(agents, velocity=agents.velocity * 3)
    no_grid = scene.without_grid(s)
    (s_gpu, a_gpu, n_gpu), (s_cpu, a_cpu, _) = both((s, agents, no_grid))
    gpu, cpu = jax.device_get(core.physics(s_gpu, a_gpu)), jax.device_get(core.physics(s_cpu, a_cpu))
    assert_physics_close(gpu, cpu)
    assert 0.05 < (gpu[1] < 1).mean() < 1, "some walls should stop some agents"
    for view in (lambda s, a: core.render(s, a, res=96, fov=70.0),
                 lambda s, a: core.observe(s, a, res=128, fov=70.0, subsample=4)):  # fmt: skip
        gpu = jax.device_get(view(s_gpu, a_gpu))
        check = assert_renders_close if isinstance(gpu, core.Render) else assert_observations_close
        check(gpu, jax.device_get(view(s_cpu, a_cpu)))
        for a, b in zip(gpu, jax.device_get(view(n_gpu, a_gpu)), strict=True):  # the same GPU rays, all walls
            np.testing.assert_array_equal(a, b)


# views of 16 warps (512, 500: blocks of 8 search them together, the last warp partial for 500), of fewer (256:
# the warps alone)
@pytest.mark.parametrize("res, n_viewers", [(100, 3), (33, 1), (32, 5), (7, 2), (256, 2), (500, 3), (512, 1)])
def test_render_views_chunks_and_batches_cuda_match_cpu(res, n_viewers):
    # every way a warp's index splits into batch element, env, viewer and chunk of 32 rays, the last chunk partial
    geometries = mixed_geometries(17)
    s = scene.scenery([geometries[i % 4] for i in range(37)], n_agents=5)
    rng = np.random.default_rng(res)
    agents = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_agents(rng, 37, 5) for _ in range(3)])
    mask = jnp.asarray(rng.random((3, 37, n_viewers)) < 0.8)
    # each batch element its own assignment of geometries to envs, so that a wrong batch index shows
    env_geometry = jnp.stack([jnp.asarray(rng.permutation(np.asarray(s.env_geometry))) for _ in range(3)])

    def views(s, env_geometry, agents, mask):
        def one(g, a, m):
            return core.render(dataclasses.replace(s, env_geometry=g), a, res=res, n_viewers=n_viewers, mask=m)

        return jax.vmap(one)(env_geometry, agents, mask)

    gpu = jax.device_get(jax.jit(views)(*on("gpu", (s, env_geometry, agents, mask))))
    cpu = jax.device_get(jax.jit(views)(*on("cpu", (s, env_geometry, agents, mask))))
    assert gpu.indices.shape == (3, 37, n_viewers, res)
    assert_renders_close(gpu, cpu)
    np.testing.assert_array_equal(gpu.indices[~np.asarray(mask)], -1)


# Views of more than a block's 256 lines, which the block search lists 256 at a time for each chunk: a geometry of
# 300 walls among small ones (their mean stays below the grid search's), and 40 agents' model lines in a box.
@pytest.mark.parametrize("n_agents, big_walls", [(3, 300), (40, 0)])
@pytest.mark.parametrize("res, subsample", [(512, 1), (500, 1), (1024, 4)])
def test_views_of_many_lines_cuda_match_cpu(n_agents, big_walls, res, subsample):
    rng = np.random.default_rng(res + n_agents)
    geometries = [random_walls(rng, big_walls), toys.box(), toys.column()] if big_walls else [toys.box()]
    s = scene.scenery([geometries[i % len(geometries)] for i in range(11)], n_agents=n_agents)
    agents = random_agents(rng, 11, n_agents, lo=1.2, hi=5.8)
    mask = jnp.asarray(rng.random((11, n_agents)) < 0.8)
    # the premise: some view has more lines than a block lists at once, and the views do not go through the grid
    most_walls = int(np.diff(np.asarray(s.wall_offsets)).max())
    assert n_agents * 8 + most_walls > 256 and int(s.wall_offsets[-1]) < 192 * len(geometries)

    def views(s, a, m):
        render = core.render(s, a, res=res, mask=m)
        return render, core.observe(s, a, res=res, subsample=subsample, mask=m, max_depth=6.0)

    gpu_args, cpu_args = both((s, agents, mask))
    (gpu_render, gpu_obs), (cpu_render, cpu_obs) = jax.device_get(jax.jit(views)(*gpu_args)), jax.jit(views)(*cpu_args)
    # a model line is 4 cm long: rounding in the agents' sin and cos (which differ between the libraries) moves a
    # hit's location along it 25 times as much as along a metre of wall
    atol = 1e-3 if n_agents > 8 else 1e-4
    assert_renders_close(gpu_render, cpu_render, atol=atol)
    assert_observations_close(gpu_obs, cpu_obs, atol=atol)
    assert (gpu_render.indices >= n_agents * 8).any() and (gpu_render.indices[~np.asarray(mask)] == -1).all()


# (res, subsample): columns that fill a warp (4, 32, 1), that leave lanes idle (3: 30 rays a warp; 7: 28), a
# partial last warp (100 and 96 rays), more than a warp's rays per column (48: rendered, then averaged)
# (512, 4), (512, 1), (474, 3): views of 16 warps (the last partial for 474), which blocks of 8 search together
@pytest.mark.parametrize("res, subsample, n_viewers", [(100, 4, 3), (96, 3, 2), (512, 4, 4), (64, 32, 1), (7, 7, 2),
                                                       (30, 1, 5), (96, 48, 1), (512, 1, 2), (474, 3, 2)])  # fmt: skip
def test_observe_views_chunks_and_batches_cuda_match_cpu(res, subsample, n_viewers):
    geometries = mixed_geometries(19)
    s = scene.scenery([geometries[i % 4] for i in range(37)], n_agents=5)
    rng = np.random.default_rng(res + subsample)
    agents = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_agents(rng, 37, 5) for _ in range(3)])
    mask = jnp.asarray(rng.random((3, 37, n_viewers)) < 0.8)
    env_geometry = jnp.stack([jnp.asarray(rng.permutation(np.asarray(s.env_geometry))) for _ in range(3)])

    def batched(fn):
        def run(s, env_geometry, agents, mask):
            def one(g, a, m):
                return fn(dataclasses.replace(s, env_geometry=g), a, m)

            return jax.vmap(one)(env_geometry, agents, mask)

        return jax.jit(run)

    def observe(s, a, m):
        return core.observe(s, a, res=res, n_viewers=n_viewers, mask=m, subsample=subsample, max_depth=6.0)

    def rendered_then_averaged(s, a, m):
        view = core.render(s, a, res=res, n_viewers=n_viewers, mask=m)
        return reference.columns(view, subsample, core.AGENT_RADIUS, 6.0)

    args_gpu, args_cpu = on("gpu", (s, env_geometry, agents, mask)), on("cpu", (s, env_geometry, agents, mask))
    gpu = jax.device_get(batched(observe)(*args_gpu))
    assert gpu.rgb.shape == (3, 37, n_viewers, 1, res // subsample, 3)
    assert_observations_close(gpu, jax.device_get(batched(observe)(*args_cpu)))
    np.testing.assert_array_equal(gpu.indices[~np.asarray(mask)], -1)
    # the kernel's in-warp averages are those of the same GPU rays rendered in full
    rgb, depth, indices, locations = jax.device_get(batched(rendered_then_averaged)(*args_gpu))
    np.testing.assert_array_equal(gpu.indices, indices)
    np.testing.assert_array_equal(gpu.locations, locations)
    np.testing.assert_allclose(gpu.rgb[..., 0, :, :], rgb, atol=1e-6)
    np.testing.assert_allclose(gpu.depth[..., 0, :, 0], depth, atol=1e-6)


def test_agents_lit_through_gaps_between_walls_cuda_matches_cpu():
    # agents crowded among many random walls and lights: most warps see agents, lit in part, their light shared out
    # over the warp on the GPU and worked out ray by ray on the CPU
    rng = np.random.default_rng(23)
    geometries = [random_walls(rng, 60, n_lights=6), random_walls(rng, 90, n_lights=4)]
    s = scene.scenery([geometries[i % 2] for i in range(300)], n_agents=12)
    agents = random_agents(rng, 300, 12, lo=3.0, hi=7.0)
    (s_gpu, a_gpu), (s_cpu, a_cpu) = both((s, agents))
    gpu = jax.device_get(core.render(s_gpu, a_gpu, res=96))
    cpu = jax.device_get(core.render(s_cpu, a_cpu, res=96))
    assert_renders_close(gpu, cpu)
    on_models = (gpu.indices >= 0) & (gpu.indices < 12 * 8) & (gpu.indices == cpu.indices)
    assert on_models.mean() > 0.03, "want many rays on agents"
    np.testing.assert_allclose(gpu.screen[on_models], cpu.screen[on_models], atol=1e-5)
    brightness = gpu.screen[on_models].max(-1) / np.maximum(1 - gpu.dots[on_models] ** 2, 1e-3)
    assert np.ptp(brightness) > 0.2, "want agents in light and in shadow"


def test_bake_cuda_matches_cpu():
    geometries = mixed_geometries(12)
    with jax.default_device(jax.devices("gpu")[0]):
        gpu = scene.scenery(geometries)
    with jax.default_device(jax.devices("cpu")[0]):
        cpu = scene.scenery(geometries)
    np.testing.assert_allclose(jax.device_get(gpu.baked), cpu.baked, atol=1e-5)


def test_tutorial_number_on_cuda():
    s = on("gpu", scene.scenery([toys.box()]))
    agents = on("gpu", dataclasses.replace(core.agents(1, 1, positions=jnp.full((1, 1, 2), 3.0)),
                                           velocity=jnp.asarray([[[1000.0, 0.0]]])))  # fmt: skip
    moved, _ = core.physics(s, agents, fps=10)
    np.testing.assert_allclose(jax.device_get(moved.positions), [[[5.8649, 3.0]]], atol=1e-3)
    np.testing.assert_array_equal(jax.device_get(moved.velocity), 0.0)


def test_scan_and_vmap_on_cuda_match_cpu():
    geometries = mixed_geometries(13)
    s = scene.scenery([geometries[i % 4] for i in range(64)], n_agents=2)
    rng = np.random.default_rng(3)
    agents = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_agents(rng, 64, 2, 2.5, 4.5) for _ in range(2)])
    velocities = jnp.asarray(rng.normal(size=(100, 2, 64, 2, 2)) * 5, jnp.float32)

    @jax.jit
    def rollout(s, agents, velocities):
        def step(agents, v):
            def one(a, v):
                moved, progress = core.physics(s, dataclasses.replace(a, velocity=v))
                return moved, (a, progress, core.render(s, moved, res=32))

            return jax.vmap(one)(agents, v)

        return jax.lax.scan(step, agents, velocities)

    _, (before, progress, view) = jax.device_get(rollout(*on("gpu", (s, agents, velocities))))
    # 100 steps of rounding differences move the agents apart, so check each step from the GPU's own states
    cpu_s, cpu_before = on("cpu", (s, before))
    flat = jax.tree.map(lambda x: x.reshape(200, *x.shape[2:]), cpu_before)
    _, cpu_progress = jax.vmap(lambda a: core.physics(cpu_s, a))(
        dataclasses.replace(flat, velocity=velocities.reshape(200, 64, 2, 2))
    )
    np.testing.assert_allclose(progress.reshape(200, 64, 2), cpu_progress, atol=1e-4)
    # view t was rendered from the state step t + 1 starts from
    cpu_view = jax.vmap(lambda a: core.render(cpu_s, a, res=32))(jax.tree.map(lambda x: x[2:], flat))
    gpu_view = jax.tree.map(lambda x: x.reshape(200, *x.shape[2:])[:-2], view)
    assert_renders_close(gpu_view, cpu_view)
    assert (progress < 1).mean() > 0.05, "agents should often be stopped by walls or each other"
