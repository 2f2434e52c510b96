"""The gymnasium and gymnax wrappers: spaces, numpy conversion, seeding, SAME_STEP autoreset, multi-agent flattening,
action checks, and gymnax's functional API under jit, vmap and scan."""

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils import env_checker, passive_env_checker

import jaxstep
from jaxstep import toys
from jaxstep.pytree import replace
from jaxstep.wrappers import GymnasiumVectorEnv, GymnaxEnv, gymnasium_space

# small, quick envs whose episodes end within a few steps
CONFIG = {
    "minimal": dict(res=16),
    "explorer": dict(res=16, geometries=[toys.box()]),
    "waypoint": dict(res=16, geometries=[toys.box()]),
    "deathmatch": dict(res=32, subsample=4, geometries=[toys.box()]),
}
QUICK = {
    "minimal": dict(max_length=3),
    "explorer": dict(patience=3),
    "waypoint": dict(max_length=3),
    "deathmatch": dict(decline=0.4),  # health 1 -> 0.6 -> 0.2 -> -0.2: every agent dies by the third step
}


def make(name: str, n_envs: int = 2):
    env = jaxstep.make(name, n_envs=n_envs, **CONFIG[name])
    return env, replace(env.default_params, **QUICK[name])


def data(x):
    """`x` as a numpy array; a PRNG key as its key data."""
    return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def flat(x):
    """(n_envs, n_agents, ...) -> (n_envs * n_agents, ...) as numpy."""
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])


@pytest.fixture(scope="module", params=sorted(CONFIG))
def vec(request):
    env, params = make(request.param)
    return GymnasiumVectorEnv(env, seed=0, params=params)


@pytest.fixture(scope="module")
def minimal_vec():
    env, params = make("minimal")
    return GymnasiumVectorEnv(env, params=params)


@pytest.fixture(scope="module")
def deathmatch_vec():
    env, params = make("deathmatch")
    return GymnasiumVectorEnv(env, params=params)


def check_numpy_obs(obs, space: gymnasium.spaces.Dict):
    assert isinstance(obs, dict) and obs.keys() == space.spaces.keys()
    for name, x in obs.items():
        assert type(x) is np.ndarray, name
        assert x.dtype == space[name].dtype and x.shape == space[name].shape, name
        assert x.flags.writeable, name
    assert space.contains(obs)


# --- gymnasium: spaces, types, gymnasium's checks ---------------------------------------------------------------------


def test_spaces_and_numpy_types(vec):
    env = vec.env
    n, A = env.n_envs, env.n_agents
    assert vec.num_envs == n * A
    assert vec.single_action_space == gymnasium.spaces.Discrete(env.action_space.n_actions)
    assert vec.action_space == gymnasium.spaces.MultiDiscrete([env.action_space.n_actions] * (n * A))
    single = vec.single_observation_space
    assert isinstance(single, gymnasium.spaces.Dict) and list(single) == list(env.observation_space)
    for name, space in env.observation_space.items():
        box = single[name]
        assert isinstance(box, gymnasium.spaces.Box) and box.dtype == np.float32
        assert box.shape == space.agent_shape
        if isinstance(space, jaxstep.spaces.MultiImage):
            assert len(box.shape) == 3 and np.all(box.low == space.low) and np.all(box.high == space.high)
        assert vec.observation_space[name].shape == (n * A, *space.agent_shape)
    assert vec.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP

    obs, infos = vec.reset(seed=0)
    check_numpy_obs(obs, vec.observation_space)
    assert isinstance(infos, dict)
    for _ in range(4):
        obs, rewards, terminations, truncations, infos = vec.step(vec.action_space.sample())
        check_numpy_obs(obs, vec.observation_space)
        for x, dtype in ((rewards, np.float32), (terminations, np.bool_), (truncations, np.bool_)):
            assert type(x) is np.ndarray and x.dtype == dtype and x.shape == (n * A,)
        assert isinstance(infos, dict)
        assert not infos["invalid_actions"].any() and infos["_invalid_actions"].all()
    assert vec.render() is None


def test_gymnasium_checkers(minimal_vec):
    """gymnasium's own checks, those that apply to a VectorEnv; their warnings count as failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env_checker.check_reset_return_type(minimal_vec)
        env_checker.check_reset_options(minimal_vec)
        env_checker.check_reset_seed_determinism(minimal_vec)
        for space in (minimal_vec.observation_space, minimal_vec.single_observation_space):
            passive_env_checker.check_observation_space(space)
        for space in (minimal_vec.action_space, minimal_vec.single_action_space):
            passive_env_checker.check_action_space(space)
        obs, info = passive_env_checker.env_reset_passive_checker(minimal_vec, seed=3)
        previous = (obs, info)
        for i in range(4):
            obs, _, _, _, info = minimal_vec.step(minimal_vec.action_space.sample())
            passive_env_checker.check_obs(obs, minimal_vec.observation_space, "step")
            passive_env_checker.env_data_reuse_passive_checker(previous, (obs, info), f"step {i}", f"step {i + 1}")
            previous = (obs, info)


def test_gymnasium_data_not_reused():
    """gymnasium's check_returned_data_not_reused tests `terminated or truncated`, so needs num_envs == 1."""
    env, params = make("minimal", n_envs=1)
    vec = GymnasiumVectorEnv(env, seed=5, params=params)
    # the constructor's seed is the first reset's
    first, _ = vec.reset()
    again, _ = vec.reset(seed=5)
    assert env_checker.data_equivalence(first, again, exact=True)
    env_checker.check_returned_data_not_reused(vec)


def test_seeded_reset_is_deterministic(minimal_vec):
    a, _ = minimal_vec.reset(seed=7)
    a_next, _ = minimal_vec.reset()
    b, _ = minimal_vec.reset(seed=7)
    b_next, _ = minimal_vec.reset()
    c, _ = minimal_vec.reset(seed=8)
    assert env_checker.data_equivalence(a, b, exact=True)
    assert env_checker.data_equivalence(a_next, b_next, exact=True)
    assert not env_checker.data_equivalence(a, a_next, exact=True)
    assert not env_checker.data_equivalence(a, c, exact=True)


@pytest.mark.parametrize("name", ["minimal", "deathmatch"])
def test_matches_direct_jaxstep(name, minimal_vec, deathmatch_vec):
    """Same key, same actions: the wrapper returns jaxstep's arrays flattened, sub-env i = agent i % A of env i // A."""
    vec = minimal_vec if name == "minimal" else deathmatch_vec
    env, params = vec.env, vec.params
    n, A = env.n_envs, env.n_agents
    reset, step = jax.jit(env.reset), jax.jit(env.step)

    obs, _ = vec.reset(seed=3)
    state, ts = reset(jax.random.key(3), params)
    for k in obs:
        np.testing.assert_array_equal(obs[k], flat(ts.obs[k]))
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(7):
        actions = rng.integers(0, env.action_space.n_actions, n * A)
        obs, rewards, terminations, truncations, infos = vec.step(actions)
        state, ts = step(state, jnp.asarray(actions.reshape(n, A), jnp.int32), params)
        for k in obs:
            np.testing.assert_array_equal(obs[k], flat(ts.obs[k]))
        np.testing.assert_array_equal(rewards, flat(ts.reward))
        np.testing.assert_array_equal(terminations, flat(ts.terminated))
        np.testing.assert_array_equal(truncations, flat(ts.truncated))
        done = flat(ts.done)
        for i in np.flatnonzero(done):
            for k in obs:
                np.testing.assert_array_equal(infos["final_obs"][i][k], flat(ts.final_obs[k])[i])
        finished += done.sum()
    assert finished > 0
    for a, b in zip(jax.tree.leaves(vec.state), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(data(a), data(b))


def test_multi_agent_flattening(deathmatch_vec):
    env = deathmatch_vec.env
    assert env.n_agents == 4
    assert deathmatch_vec.num_envs == env.n_envs * env.n_agents == 8
    assert deathmatch_vec.single_observation_space["rgb"].shape == (1, 8, 3)
    assert deathmatch_vec.observation_space["health"].shape == (8, 1)
    obs, _ = deathmatch_vec.reset(seed=1)
    np.testing.assert_array_equal(obs["health"][:, 0], flat(deathmatch_vec.state.health))
    # sub-env 5 is agent 1 of env 1: only it turns
    actions = np.zeros(8, np.int64)
    actions[5] = 5
    deathmatch_vec.step(actions)
    turning = np.asarray(deathmatch_vec.state.agents.angvelocity) != 0
    np.testing.assert_array_equal(np.argwhere(turning), [[1, 1]])


# --- gymnasium: SAME_STEP autoreset -----------------------------------------------------------------------------------


def test_same_step_autoreset(minimal_vec):
    """Env 0 truncates a step before env 1: infos carry the final obs of just the finished sub-env, whose returned
    obs is already its new episode's first, and the next step acts in that new episode."""
    vec = minimal_vec
    vec.reset(seed=2)
    vec.state = replace(vec.state, time=vec.state.time.at[0, 0].set(1))  # env 0 is a step ahead
    keys = list(vec.single_observation_space)

    obs, _, _, truncations, infos = vec.step(np.zeros(2, np.int64))
    assert not truncations.any() and "final_obs" not in infos and "_final_obs" not in infos
    before = obs

    obs, rewards, terminations, truncations, infos = vec.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(truncations, [True, False])
    assert not terminations.any()
    np.testing.assert_array_equal(infos["_final_obs"], [True, False])
    np.testing.assert_array_equal(infos["_final_info"], [True, False])
    final = infos["final_obs"]
    assert final.dtype == object and final.shape == (2,) and final[1] is None
    assert vec.single_observation_space.contains(final[0])
    # noop actions: the finished agent's last view is what it saw before; its new view is the respawned agent's
    for k in keys:
        np.testing.assert_array_equal(final[0][k], before[k][0])
        np.testing.assert_array_equal(obs[k][1], before[k][1])
    assert not all(np.array_equal(obs[k][0], final[0][k]) for k in keys), "a reset should change the view"
    np.testing.assert_array_equal(np.asarray(vec.state.time), [[0], [2]])

    obs, _, _, truncations, infos = vec.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(truncations, [False, True])
    np.testing.assert_array_equal(infos["_final_obs"], [False, True])
    assert infos["final_obs"][0] is None


def test_record_episode_statistics_sees_same_step(minimal_vec):
    """gymnasium's own episode statistics, which read the autoreset mode from metadata, count 3-step episodes."""
    wrapped = gymnasium.wrappers.vector.RecordEpisodeStatistics(minimal_vec)
    wrapped.reset(seed=0)
    lengths = []
    for _ in range(9):
        *_, infos = wrapped.step(wrapped.action_space.sample())
        if "episode" in infos:
            lengths += infos["episode"]["l"][infos["_episode"]].tolist()
    assert lengths == [3] * 6


def test_deathmatch_terminations(deathmatch_vec):
    deathmatch_vec.reset(seed=0)
    for _ in range(3):
        obs, _, terminations, truncations, infos = deathmatch_vec.step(np.zeros(8, np.int64))
        assert not truncations.any()
        done = terminations | truncations
        if done.any():
            np.testing.assert_array_equal(infos["_final_obs"], done)
            for i in range(8):
                assert (infos["final_obs"][i] is None) == (not done[i])
                if done[i]:
                    # the obs is made before the step's losses, so the last one shows the health before the fatal step
                    assert infos["final_obs"][i]["health"][0] < 1
                    assert obs["health"][i, 0] == 1  # respawned
    assert done.all(), "every agent's health ran out by the third step"


# --- gymnasium: bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actions",
    [
        np.zeros(3, np.int64),  # too many
        np.zeros((2, 1), np.int64),  # (n_envs, n_agents) rather than (num_envs,)
        np.zeros(2, np.float32),
        np.zeros(2, bool),
        np.array([0, 7]),
        np.array([-1, 0]),
        [[0], [1, 2]],
        ["a", "b"],
        0,
        None,
    ],
)
def test_bad_actions(minimal_vec, actions):
    minimal_vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        minimal_vec.step(actions)


def test_seed_and_lifecycle():
    env, params = make("minimal", n_envs=1)
    with pytest.raises(ValueError, match="seed"):
        GymnasiumVectorEnv(env, seed=-1)
    vec = GymnasiumVectorEnv(env, params=params)
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=1.5)
    with pytest.raises(gymnasium.error.ResetNeeded):
        vec.step(np.zeros(1, np.int64))
    vec.close()
    vec.close()
    assert vec.closed and vec.state is None


def test_gymnasium_space_translation():
    s = jaxstep.spaces
    space = s.Dict(
        img=s.MultiImage(2, 3, 4, 5, 1, low=-1.0, high=2.0),
        vec=s.MultiVector(2, 3, 6, low=0.0),
        const=s.MultiConstant(2, 3, value=4.0),
        nested=s.Dict(act=s.MultiDiscrete(2, 3, 5)),
    )
    g = gymnasium_space(space)
    assert g["img"] == gymnasium.spaces.Box(-1.0, 2.0, (4, 5, 1), np.float32)
    assert g["vec"] == gymnasium.spaces.Box(0.0, np.inf, (6,), np.float32)
    assert g["const"] == gymnasium.spaces.Box(4.0, 4.0, (), np.float32)
    assert g["nested"]["act"] == gymnasium.spaces.Discrete(5, dtype=np.int32)
    # a jaxstep member, one agent's part of it, is a gymnasium member
    x = jax.tree.map(np.asarray, space.sample(jax.random.key(0)))
    one = jax.tree.map(lambda v: np.array(v[1, 2]), x)
    assert g.contains(one)


# --- gymnax -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gymnax_env():
    env, params = make("minimal")
    g = GymnaxEnv(env)

    @jax.jit
    def rollout(reset_key, step_key, actions):
        obs, state = g.reset(reset_key, params)

        def body(state, xs):
            key, action = xs
            obs, state, reward, done, info = g.step(key, state, action, params)
            return state, (obs, reward, done, info)

        keys = jax.random.split(step_key, actions.shape[0])
        return obs, jax.lax.scan(body, state, (keys, actions))

    return g, params, rollout


def test_gymnax_api(gymnax_env):
    g, params, _ = gymnax_env
    assert g.name == "minimal" and g.num_actions == 7
    assert g.observation_space(params) is g.env.observation_space
    assert g.action_space(params) is g.env.action_space
    assert g.default_params == g.env.default_params
    assert g.n_envs == 2 and g.n_agents == 1


def test_gymnax_rollout(gymnax_env):
    g, params, rollout = gymnax_env
    actions = g.action_space(params).sample(jax.random.key(4))[None].repeat(7, 0)
    first, (state, (obs, reward, done, info)) = rollout(jax.random.key(0), jax.random.key(1), actions)
    assert g.observation_space(params).contains(first)
    assert done.shape == (7, 2, 1) and done.dtype == jnp.bool_ and reward.shape == (7, 2, 1)
    # episodes of max_length 3 steps, truncated, never terminated
    np.testing.assert_array_equal(done[:, :, 0], np.array([[0, 0, 1] * 2 + [0]] * 2, bool).T)
    np.testing.assert_array_equal(done, info["truncated"] | info["terminated"])
    assert not info["terminated"].any() and (info["discount"] == 1).all()
    for t in range(7):
        assert g.observation_space(params).contains(jax.tree.map(lambda x, t=t: x[t], obs))
    same = np.asarray((obs["rgb"] == info["final_obs"]["rgb"]).reshape(7, 2, -1).all(-1))
    ended = np.asarray(done[..., 0])
    assert same[~ended].all() and not same[ended].all()

    # same keys, same trajectory; other step keys: same until the first reset, then other respawns
    again = rollout(jax.random.key(0), jax.random.key(1), actions)
    for a, b in zip(jax.tree.leaves((first, obs, reward, done)), jax.tree.leaves(again[:1] + again[1][1][:3]),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    _, (_, (other, *_)) = rollout(jax.random.key(0), jax.random.key(2), actions)
    np.testing.assert_array_equal(other["rgb"][:2], obs["rgb"][:2])
    assert not np.array_equal(other["rgb"][2], obs["rgb"][2])


def test_gymnax_vmap(gymnax_env):
    g, params, rollout = gymnax_env
    actions = jnp.zeros((4, 2, 1), jnp.int32)
    reset_keys = jax.random.split(jax.random.key(5), 3)
    step_keys = jax.random.split(jax.random.key(6), 3)
    batched = jax.jit(jax.vmap(rollout, in_axes=(0, 0, None)))(reset_keys, step_keys, actions)
    assert batched[0]["rgb"].shape == (3, 2, 1, 1, 16, 3)
    single = rollout(reset_keys[1], step_keys[1], actions)
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
        np.testing.assert_array_equal(data(a)[1], data(b))


def test_gymnax_without_key_is_env_step(gymnax_env):
    g, params, _ = gymnax_env
    env = g.env

    @jax.jit
    def both(key, action):
        obs, state = g.reset(key, params)
        direct_state, ts = env.reset(key, params)
        out = g.step(None, state, action, params)
        direct = env.step(direct_state, action, params)
        return (obs, ts.obs), out, direct

    (obs, direct_obs), (obs2, state2, reward, done, info), (direct_state, ts) = both(
        jax.random.key(9), jnp.ones((2, 1), jnp.int32)
    )
    np.testing.assert_array_equal(obs["rgb"], direct_obs["rgb"])
    np.testing.assert_array_equal(obs2["rgb"], ts.obs["rgb"])
    np.testing.assert_array_equal(reward, ts.reward)
    np.testing.assert_array_equal(done, ts.done)
    np.testing.assert_array_equal(jax.random.key_data(state2.key), jax.random.key_data(direct_state.key))
