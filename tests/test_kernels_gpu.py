"""The CUDA kernels against the CPU kernels (run with `pytest -m gpu` on a machine with a CUDA GPU)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mixed_geometries, random_agents
from kernel_checks import assert_physics_close, assert_renders_close

from jaxstep import core, scene, toys

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

    def rollout(s, agents, velocities):
        def step(agents, v):
            def one(a, v):
                a, progress = core.physics(s, dataclasses.replace(a, velocity=v))
                return a, (progress, core.render(s, a, res=32))

            agents, out = jax.vmap(one)(agents, v)
            return agents, out

        return jax.lax.scan(step, agents, velocities)

    run = jax.jit(rollout)
    (_, (prog_gpu, render_gpu)), (_, (prog_cpu, render_cpu)) = (run(*args) for args in both((s, agents, velocities)))
    np.testing.assert_allclose(jax.device_get(prog_gpu), prog_cpu, atol=1e-3)
    assert_renders_close(jax.device_get(render_gpu), render_cpu, atol=1e-3)
