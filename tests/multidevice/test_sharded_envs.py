"""Run by tests/test_sharding.py in a process with 4 CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstep
from jaxstep.sharding import ShardedEnv


def local_env(n):
    return jaxstep.make("explorer", n_envs=n, geometries="box", res=16)


@pytest.fixture(scope="module")
def sharded():
    assert len(jax.devices()) == 4
    return ShardedEnv(local_env, n_envs=8)


def test_sharded_equals_one_local_env_per_device(sharded):
    key = jax.random.PRNGKey(0)
    actions = jax.random.randint(jax.random.PRNGKey(1), (20, 8, 1), 0, 7)
    state, ts = sharded.reset(key)
    assert state.agents.positions.sharding.spec[0] == "envs"
    steps = []
    for t in range(20):
        state, ts = sharded.step(state, actions[t])
        steps.append(ts)
    local = sharded.local
    reset, step = jax.jit(local.reset), jax.jit(local.step)
    for d, device_key in enumerate(jax.random.split(key, 4)):
        alone, _ = reset(device_key)
        for t in range(20):
            alone, ts_alone = step(alone, actions[t, 2 * d : 2 * d + 2])
            assert_trees_close(sharded.shard(steps[t], d), ts_alone)
        assert_trees_close(sharded.shard(state, d), alone)


def assert_trees_close(a, b):
    """Equal, up to the rounding of differently fused float arithmetic."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_allclose(x, y, atol=1e-5)
        else:
            np.testing.assert_array_equal(x, y)


def test_step_gathers_nothing(sharded):
    state, _ = sharded.reset(jax.random.PRNGKey(0))
    action = jax.device_put(jnp.zeros((8, 1), jnp.int32), sharded.sharding)
    hlo = sharded._step.lower(state, action, sharded.default_params).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" not in hlo


def test_bad_sizes(sharded):
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        ShardedEnv(local_env, n_envs=6)
    state, _ = sharded.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="action"):
        sharded.step(state, jnp.zeros((4, 1), jnp.int32))
