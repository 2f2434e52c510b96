"""Shared fixtures: a few geometries, sceneries over them, and random agents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstep import core, scene, toys


def _has_gpu() -> bool:
    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


HAS_GPU = _has_gpu()

# needs several devices: run by test_sharding.py in its own process
collect_ignore = ["multidevice"]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip)


def random_walls(rng: np.random.Generator, n: int, n_lights: int = 3) -> dict:
    """n random walls of 0.2-3 m inside a 10 m square (they may cross), and some lights."""
    a = rng.uniform(1, 9, (n, 2))
    d = rng.normal(size=(n, 2))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = a + d * rng.uniform(0.2, 3, (n, 1))
    return dict(walls=np.stack([a, b], 1), lights=rng.uniform(1, 9, (n_lights, 2)))


def mixed_geometries(seed: int = 0) -> list[dict]:
    """Four geometries of different sizes: the box, the column, and two random ones."""
    rng = np.random.default_rng(seed)
    return [toys.box(), toys.column(), random_walls(rng, 40), random_walls(rng, 7, n_lights=1)]


def random_agents(rng: np.random.Generator, n_envs: int, n_agents: int, lo=1.5, hi=5.5) -> core.Agents:
    f32 = jnp.float32
    return core.Agents(
        angles=jnp.asarray(rng.uniform(-180, 180, (n_envs, n_agents)), f32),
        positions=jnp.asarray(rng.uniform(lo, hi, (n_envs, n_agents, 2)), f32),
        velocity=jnp.asarray(rng.normal(size=(n_envs, n_agents, 2)) * 3, f32),
        angvelocity=jnp.asarray(rng.normal(size=(n_envs, n_agents)) * 100, f32),
    )


@pytest.fixture(scope="session")
def mixed_scenery():
    """32 envs cycling over four geometries, 3 agents each."""
    geometries = mixed_geometries()
    return scene.scenery([geometries[i % 4] for i in range(32)], n_agents=3)
