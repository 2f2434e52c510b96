"""Every registered env against the shared contract, then each env's own rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxstep
from jaxstep import core, envs, toys
from jaxstep.envs.explorer import unpack_bits
from jaxstep.ffi.types import MODEL_LINES, Agents
from jaxstep.pytree import replace

# params that end episodes within the conformance rollout
QUICK = {
    "minimal": dict(max_length=50),
    "explorer": dict(patience=10),
    "waypoint": dict(max_length=50),
    "deathmatch": dict(decline=0.02),
}
STEPS = 300


def rollout(env, params, key, steps=STEPS):
    """Random actions in a jitted scan; returns the final state, every TimeStep and how often step was traced."""
    traces = []

    def step(state, key):
        traces.append(1)
        state, ts = env.step(state, env.action_space.sample(key), params)
        return state, ts

    @jax.jit
    def run(key):
        reset_key, step_key = jax.random.split(key)
        state, first = env.reset(reset_key, params)
        state, ts = jax.lax.scan(step, state, jax.random.split(step_key, steps))
        return state, first, ts

    return (*run(key), traces)


@pytest.fixture(scope="module", params=sorted(envs.REGISTRY))
def env_rollout(request):
    name = request.param
    # small geometries keep the CPU rollouts quick
    env = jaxstep.make(name, n_envs=3, **({} if name == "minimal" else dict(geometries=[toys.box()])))
    params = replace(env.default_params, **QUICK[name])
    return name, env, params, rollout(env, params, jax.random.PRNGKey(0))


def test_conformance(env_rollout):
    name, env, params, (state, first, ts, traces) = env_rollout
    n, A = env.n_envs, env.n_agents
    assert len(traces) == 1, "step should trace once"
    assert env.observation_space.contains(first.obs)
    for t in (0, STEPS // 2, STEPS - 1):
        at = jax.tree.map(lambda x, t=t: x[t], ts)
        assert env.observation_space.contains(at.obs), f"{name}: obs at step {t} outside the space"
        assert env.observation_space.contains(at.final_obs)
    for field in (ts.reward, ts.terminated, ts.truncated):
        assert field.shape == (STEPS, n, A)
    assert ts.reward.dtype == jnp.float32 and ts.terminated.dtype == jnp.bool_
    for leaf in jax.tree.leaves((ts.obs, ts.reward, ts.final_obs)):
        assert np.isfinite(np.asarray(leaf)).all()
    done = np.asarray(ts.done)
    assert done.any(), f"{name}: no episode ended in {STEPS} steps"
    # final_obs differs from obs only where an agent was reset
    key = next(iter(ts.obs))
    same = (np.asarray(ts.obs[key]) == np.asarray(ts.final_obs[key])).reshape(STEPS, n, A, -1).all(-1)
    assert same[~done].all()
    assert not same[done].all(), "a reset should change what the agent sees"
    assert not np.asarray(ts.info["invalid_actions"]).any()


def test_autoreset_renders_only_the_views_that_reset_and_changes_nothing(env_rollout):
    # Env.step re-observes with only=done after a reset; an env that ignores `only` (renders every view again)
    # must give bit-identical steps
    name, env, params, (_, _, ts, _) = env_rollout
    assert np.asarray(ts.truncated | ts.terminated).any(), "the rollout has resets"

    class RendersAll(type(env)):
        def _observe(self, state, params, only=None):
            return super()._observe(state, params, None)

    everything = RendersAll.__new__(RendersAll)
    everything.__dict__.update(env.__dict__)
    _, _, full, _ = rollout(everything, params, jax.random.PRNGKey(0))
    for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
        for a, b in zip(jax.tree.leaves(getattr(ts, field)), jax.tree.leaves(getattr(full, field)), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {field}")


def test_envs_whose_observe_takes_no_only_still_step():
    # an env written before `_observe` took `only` keeps working: it renders every view after a reset
    from jaxstep.envs.minimal import Minimal

    class OldStyle(Minimal):
        def _observe(self, state, params):
            return super()._observe(state, params)

    params = replace(Minimal(n_envs=3).default_params, max_length=5)
    old, new = (rollout(cls(n_envs=3), params, jax.random.PRNGKey(1), steps=12)[2] for cls in (OldStyle, Minimal))
    assert np.asarray(new.truncated).any()
    np.testing.assert_array_equal(old.obs["rgb"], new.obs["rgb"])


def test_same_key_same_trajectory(env_rollout):
    name, env, params, (state, _, ts, _) = env_rollout
    state2, _, ts2, _ = rollout(env, params, jax.random.PRNGKey(0))
    for a, b in zip(jax.tree.leaves((state, ts)), jax.tree.leaves((state2, ts2)), strict=True):
        np.testing.assert_array_equal(a, b)
    _, _, ts3, _ = rollout(env, params, jax.random.PRNGKey(1))
    assert not np.array_equal(ts.obs["rgb"], ts3.obs["rgb"])


def test_state_and_plot(env_rollout, tmp_path):
    name, env, params, (state, *_) = env_rollout
    picked = env.state(state, 2)
    assert picked["agents"].positions.shape[-1] == 2 and picked["e"] == 2
    fig = env.plot_state(picked)
    fig.savefig(tmp_path / f"{name}.png")
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_step_works_under_vmap():
    env = jaxstep.make("minimal", n_envs=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states, ts = jax.vmap(env.reset)(keys)
    actions = jnp.full((3, 2, 1), 3, jnp.int32)
    stepped, ts = jax.vmap(env.step)(states, actions)
    assert ts.obs["rgb"].shape == (3, 2, 1, 1, 64, 3)
    _, alone = env.step(jax.tree.map(lambda x: x[1], states), actions[1])
    np.testing.assert_allclose(ts.obs["rgb"][1], alone.obs["rgb"], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_make_rejects_unknown_envs_and_bad_config():
    with pytest.raises(ValueError, match="unknown env 'nope'"):
        jaxstep.make("nope")
    with pytest.raises(ValueError, match="n_envs"):
        jaxstep.make("minimal", n_envs=0)
    with pytest.raises(TypeError, match="minimal"):
        jaxstep.make("minimal", colour="red")
    with pytest.raises(ValueError, match="subsample"):
        jaxstep.make("deathmatch", geometries=[toys.box()], res=10, subsample=4)


def test_step_rejects_bad_actions_and_runs_invalid_ones_as_noops():
    env = jaxstep.make("minimal", n_envs=2)
    state, _ = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"action: expected shape \(2, 1\)"):
        env.step(state, jnp.zeros((2,), jnp.int32))
    with pytest.raises(TypeError, match="action"):
        env.step(state, jnp.zeros((2, 1)))
    moved, ts = env.step(state, jnp.asarray([[7], [-1]]))
    np.testing.assert_array_equal(ts.info["invalid_actions"], [[True], [True]])
    noop, _ = env.step(state, jnp.zeros((2, 1), jnp.int32))
    np.testing.assert_array_equal(moved.agents.positions, noop.agents.positions)


# ---------------------------------------------------------------------------------------------------------
# Each env's rules


def place(state, positions, angles):
    """`state` with its agents at rest at positions (n, A, 2) facing angles (n, A)."""
    a = core.agents(*np.shape(angles), positions=jnp.asarray(positions, jnp.float32), angles=jnp.asarray(angles))
    return replace(state, agents=Agents(a.angles, a.positions, a.velocity, a.angvelocity))


def test_minimal_moves_forward_a_fixed_distance():
    env = jaxstep.make("minimal", n_envs=1)
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = place(state, [[[2.0, 3.5]]], [[0.0]])
    state, ts = env.step(state, jnp.asarray([[3]]))  # forward: 10/fps m/s for 1/fps s
    np.testing.assert_allclose(state.agents.positions, [[[2.1, 3.5]]], atol=1e-6)
    state, _ = env.step(state, jnp.asarray([[5]]))  # turn left 180/fps deg/s for 1/fps s
    np.testing.assert_allclose(state.agents.angles, [[1.8]], atol=1e-5)


def _texels_hit(env, state):
    """Wall texels (relative to the env's first) hit by env 0's rays, computed directly from the render."""
    view = core.render(env.scenery, state.agents, env.res, env.fov)
    s = env.scenery
    seen = set()
    for index, location in zip(np.asarray(view.indices[0, 0]), np.asarray(view.locations[0, 0]), strict=True):
        if index >= MODEL_LINES:
            line = index  # one geometry, one agent: line i's texels are texel_offsets[i]
            start, end = int(s.texel_offsets[line]), int(s.texel_offsets[line + 1])
            seen.add(start + min(int(np.floor((end - start) * location)), end - start - 1) - int(s.texel_offsets[8]))
    return seen


def test_explorer_rewards_newly_seen_texels():
    env = jaxstep.make("explorer", n_envs=1, geometries=[toys.box()])
    state, ts = env.reset(jax.random.PRNGKey(0))
    state = place(state, [[[3.5, 3.5]]], [[0.0]])
    state = replace(state, seen=jnp.zeros_like(state.seen), potential=jnp.zeros_like(state.potential))
    first = _texels_hit(env, state)
    state, ts = env.step(state, jnp.asarray([[0]]))  # noop, at rest: sees `first`, all new
    assert float(ts.reward[0, 0]) == pytest.approx(len(first) / env.res)
    assert set(np.flatnonzero(np.asarray(unpack_bits(state.seen[0], env.max_texels)))) == first
    state, ts = env.step(state, jnp.asarray([[0]]))  # the same view again: nothing new
    assert float(ts.reward[0, 0]) == 0.0
    state = place(state, [[[3.5, 3.5]]], [[180.0]])
    behind = _texels_hit(env, state)
    state, ts = env.step(state, jnp.asarray([[0]]))
    assert float(ts.reward[0, 0]) == pytest.approx(len(behind - first) / env.res)
    assert int(state.potential[0, 0]) == len(first | behind)


def test_explorer_ends_episodes_after_patience():
    env = jaxstep.make("explorer", n_envs=1, geometries=[toys.box()])
    params = replace(env.default_params, patience=5)
    state, _ = env.reset(jax.random.PRNGKey(0), params)
    potential = int(state.potential[0, 0])
    assert potential > 0, "the first view counts as seen"
    for t in range(1, potential + 6):
        state, ts = env.step(state, jnp.asarray([[0]]), params)
        assert bool(ts.truncated[0, 0]) == (t == potential + 5)
    assert int(state.time[0, 0]) == 0 and not bool(ts.terminated[0, 0])


def test_deathmatch_agents_face_to_face_shoot_each_other_until_respawn():
    env = jaxstep.make("deathmatch", n_envs=1, n_agents=2, geometries=[toys.box()])
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = place(state, [[[2.0, 3.5], [3.0, 3.5]]], [[0.0, 180.0]])
    p = env.default_params
    for t in range(1, 30):
        state, ts = env.step(state, jnp.zeros((1, 2), jnp.int32))
        health = 1 - t * (p.damage + p.decline)
        if health > 0:
            np.testing.assert_array_equal(ts.reward, [[1.0, 1.0]])
            np.testing.assert_allclose(state.health, [[health, health]], atol=1e-5)
            np.testing.assert_allclose(state.damage, [[t * p.damage] * 2], atol=1e-5)
        else:
            np.testing.assert_array_equal(ts.terminated, [[True, True]])
            np.testing.assert_array_equal(state.health, [[1.0, 1.0]])  # respawned
            np.testing.assert_array_equal(state.damage, [[0.0, 0.0]])
            assert np.abs(np.asarray(state.agents.positions) - [[2.0, 3.5], [3.0, 3.5]]).max() > 1e-3
            break
    else:
        pytest.fail("never respawned")


def test_deathmatch_agents_back_to_back_do_not_hit():
    env = jaxstep.make("deathmatch", n_envs=1, n_agents=2, geometries=[toys.box()])
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = place(state, [[[2.0, 3.5], [3.0, 3.5]]], [[180.0, 0.0]])
    state, ts = env.step(state, jnp.zeros((1, 2), jnp.int32))
    np.testing.assert_array_equal(ts.reward, 0.0)
    np.testing.assert_allclose(state.health, 1 - env.default_params.decline, atol=1e-6)


def test_waypoint_rewards_arrival_and_moves_the_goal():
    env = jaxstep.make("waypoint", n_envs=1, geometries=[toys.box()])
    state, ts = env.reset(jax.random.PRNGKey(0))
    state = place(state, [[[3.0, 3.5], [3.6, 3.5]]], [[0.0, 0.0]])
    _, ts = env.step(state, jnp.asarray([[0]]))
    np.testing.assert_allclose(ts.obs["waypoint"], [[[0.6, 0.0]]], atol=1e-5)  # 0.6 m straight ahead
    assert float(ts.reward[0, 0]) == 0
    state, ts = env.step(state, jnp.asarray([[3]]))  # accelerate forward: 0.05 m this step
    for _ in range(10):
        if float(ts.reward[0, 0]):
            break
        state, ts = env.step(state, jnp.asarray([[3]]))
    assert float(ts.reward[0, 0]) == 1.0
    goal = np.asarray(state.agents.positions[0, 1])
    assert np.linalg.norm(goal - [3.6, 3.5]) > 0.1, "a new goal"
    np.testing.assert_allclose(ts.obs["waypoint"][0, 0], np.asarray(
        jaxstep.modules.to_local_frame(state.agents.angles[0, 0], goal - state.agents.positions[0, 0])), atol=1e-5)


def test_deathmatch_agents_spawn_apart():
    env = jaxstep.make("deathmatch", n_envs=256, res=32, subsample=4, geometries=[toys.box()])
    state, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
    p = np.asarray(state.agents.positions)
    gaps = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1) + 99 * np.eye(4)
    assert gaps.min() > 2 * core.AGENT_RADIUS


def test_deathmatch_health_observation_is_current():
    env = jaxstep.make("deathmatch", n_envs=1, n_agents=2, geometries=[toys.box()])
    params = replace(env.default_params, decline=0.4)
    state, _ = env.reset(jax.random.PRNGKey(0), params)
    for _ in range(3):
        state, ts = env.step(state, jnp.zeros((1, 2), jnp.int32), params)
    np.testing.assert_array_equal(ts.terminated, True)
    np.testing.assert_allclose(ts.final_obs["health"][..., 0], 1 - 3 * 0.4, atol=1e-6)
    np.testing.assert_array_equal(ts.obs["health"], 1.0)
