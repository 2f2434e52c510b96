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


def test_spaces_cover_every_env(sharded):
    assert sharded.action_space.shape == (8, 1)
    state, ts = sharded.reset(jax.random.PRNGKey(0))
    assert sharded.observation_space.contains(jax.device_get(ts.obs))
    state, ts = sharded.step(state, sharded.action_space.sample(jax.random.PRNGKey(1)))
    assert sharded.observation_space.contains(jax.device_get(ts.obs))


def test_random_rollout_runs_on_every_device(sharded):
    state, _ = sharded.reset(jax.random.PRNGKey(0))
    later, used = sharded.random_rollout(state, 5)
    assert used.shape == (4, 5) and np.isfinite(np.asarray(used)).all()
    np.testing.assert_array_equal(later.time, 5)
    assert not np.array_equal(later.agents.positions, state.agents.positions)


def test_bad_sizes(sharded):
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        ShardedEnv(local_env, n_envs=6)
    state, _ = sharded.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="action"):
        sharded.step(state, jnp.zeros((4, 1), jnp.int32))


def test_data_parallel_training_matches_itself_and_learns_nothing_wrong(tmp_path):
    import dataclasses

    from jaxstep.agents import PPOConfig, run
    from jaxstep.agents.ppo import make_sharded_train

    config = PPOConfig(env="minimal", n_envs=8, rollout=4, total_steps=8 * 4 * 3, agent="feedforward", width=16,
                       minibatches=2, env_config=(("res", 8),))  # fmt: skip
    state, train = run(config, tmp_path / "a", updates_per_chunk=3, show_progress=False, devices=jax.devices())
    assert train.n_devices == 4 and state.update.shape == (4,)
    # every device holds the same network
    for leaf in jax.tree.leaves(state.params):
        np.testing.assert_array_equal(leaf[0], leaf[3])
    # and the envs on each device differ
    assert not np.array_equal(state.actor.env_state.agents.positions[0], state.actor.env_state.agents.positions[1])
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].split(",")[1] == str(8 * 4)
    # a resumed sharded run equals the uninterrupted one
    run(config, tmp_path / "b", updates_per_chunk=1, max_updates=1, show_progress=False, devices=jax.devices())
    resumed, _ = run(config, tmp_path / "b", resume=True, updates_per_chunk=1, show_progress=False,
                     devices=jax.devices())  # fmt: skip
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        make_sharded_train(dataclasses.replace(config, n_envs=6))
