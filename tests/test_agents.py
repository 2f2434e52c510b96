"""Agents, return estimators, the PPO trainer, checkpoints and resumption."""

import csv
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstep import cli, spaces
from jaxstep.agents import Agent, PPOConfig, gae, heads, make_train, read_metrics, run, unroll, vtrace
from jaxstep.agents.networks import lstm_step
from jaxstep.agents.train import latest_checkpoint, restore, save


def slow_gae(rewards, values, bootstrap, discounts, lam):
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            next_value = bootstrap[b] if t == T - 1 else values[t + 1, b]
            delta = rewards[t, b] + discounts[t, b] * next_value - values[t, b]
            running = delta + discounts[t, b] * lam * running
            adv[t, b] = running
    return adv, adv + values


def slow_vtrace(rewards, values, bootstrap, discounts, log_rhos, lam):
    T, B = rewards.shape
    rhos = np.exp(log_rhos)
    targets, pg = np.zeros((T, B)), np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, product = values[s, b], 1.0
            for t in range(s, T):
                next_value = bootstrap[b] if t == T - 1 else values[t + 1, b]
                delta = min(1.0, rhos[t, b]) * (rewards[t, b] + discounts[t, b] * next_value - values[t, b])
                total += product * delta
                product *= discounts[t, b] * lam * min(1.0, rhos[t, b])
            targets[s, b] = total
    for b in range(B):
        for t in range(T):
            next_target = bootstrap[b] if t == T - 1 else targets[t + 1, b]
            pg[t, b] = min(1.0, rhos[t, b]) * (rewards[t, b] + discounts[t, b] * next_target - values[t, b])
    return pg, targets


@pytest.fixture
def rollout():
    rng = np.random.default_rng(0)
    T, B = 7, 3
    discounts = np.where(rng.random((T, B)) < 0.2, 0.0, 0.99)
    return (rng.normal(size=(T, B)), rng.normal(size=(T, B)), rng.normal(size=B), discounts,
            rng.normal(size=(T, B)) * 0.5)  # fmt: skip


def test_gae_matches_a_loop(rollout):
    rewards, values, bootstrap, discounts, _ = rollout
    for got, want in zip(gae(rewards, values, bootstrap, discounts, 0.97),
                         slow_gae(rewards, values, bootstrap, discounts, 0.97), strict=True):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_vtrace_matches_a_loop(rollout):
    rewards, values, bootstrap, discounts, log_rhos = rollout
    for lam in (1.0, 0.9):
        got = vtrace(rewards, values, bootstrap, discounts, log_rhos, lam)
        want = slow_vtrace(rewards, values, bootstrap, discounts, log_rhos, lam)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_on_policy_vtrace_with_lambda_is_gae(rollout):
    rewards, values, bootstrap, discounts, _ = rollout
    _, targets = vtrace(rewards, values, bootstrap, discounts, np.zeros_like(rewards), 0.97)
    np.testing.assert_allclose(targets, gae(rewards, values, bootstrap, discounts, 0.97)[1], rtol=1e-5, atol=1e-6)


OBS_SPACE = spaces.Dict(
    rgb=spaces.MultiImage(2, 3, 1, 32, 3), depth=spaces.MultiImage(2, 3, 1, 32, 1), imu=spaces.MultiVector(2, 3, 3)
)


@pytest.mark.parametrize("recurrent", [True, False])
def test_agent_shapes(recurrent):
    agent = Agent(OBS_SPACE, n_actions=7, width=32, recurrent=recurrent)
    obs = jax.tree.map(lambda x: x.reshape(6, *x.shape[2:]), OBS_SPACE.sample(jax.random.PRNGKey(0)))
    carry = agent.initial_carry(6)
    params = agent.init(jax.random.PRNGKey(1), obs, carry, jnp.zeros(6, bool))
    logits, value, carry = agent.apply(params, obs, carry, jnp.zeros(6, bool))
    assert logits.shape == (6, 7) and value.shape == (6,)
    assert carry[0].shape == (6, 32 if recurrent else 1)
    actions = heads.sample(jax.random.PRNGKey(2), logits)
    assert actions.shape == (6,) and actions.dtype == jnp.int32
    np.testing.assert_allclose(jnp.exp(heads.log_prob(logits, actions)), jax.nn.softmax(logits)[jnp.arange(6), actions],
                               rtol=1e-5)  # fmt: skip
    assert (heads.entropy(logits) <= np.log(7) + 1e-5).all()


def test_bfloat16_agent_computes_close_to_float32():
    obs = jax.tree.map(lambda x: x.reshape(6, *x.shape[2:]), OBS_SPACE.sample(jax.random.PRNGKey(0)))
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        agent = Agent(OBS_SPACE, n_actions=7, width=32, dtype=dtype)
        params = agent.init(jax.random.PRNGKey(1), obs, agent.initial_carry(6), jnp.zeros(6, bool))
        assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params)), "parameters stay float32"
        outputs[dtype] = agent.apply(params, obs, agent.initial_carry(6), jnp.zeros(6, bool))
    (logits32, value32, carry32), (logits16, value16, carry16) = outputs["float32"], outputs["bfloat16"]
    assert logits16.dtype == value16.dtype == carry16[0].dtype == jnp.float32
    np.testing.assert_allclose(logits16, logits32, atol=0.02)
    np.testing.assert_allclose(value16, value32, atol=0.05)
    np.testing.assert_allclose(carry16[1], carry32[1], atol=0.05)
    assert not np.array_equal(carry16[1], carry32[1]), "bfloat16 rounding shows"


def test_bfloat16_rollouts_store_what_the_network_sees():
    config = PPOConfig(env="waypoint", n_envs=4, rollout=3, dtype="bfloat16", total_steps=10**6)
    train = make_train(config)
    state = train.init(jax.random.PRNGKey(0))
    _, rollout, _, _ = train.collect(state)
    assert {x.dtype for x in jax.tree.leaves(rollout.obs)} == {jnp.dtype(jnp.bfloat16)}
    # the intakes cast observations to bfloat16 themselves, so storing them so changes nothing
    obs, carry, reset = state.actor.obs, state.actor.carry, state.actor.done
    cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), obs)
    jax.tree.map(np.testing.assert_array_equal, train.agent.apply(state.params, obs, carry, reset),
                 train.agent.apply(state.params, cast, carry, reset))  # fmt: skip


@pytest.mark.parametrize("recurrent, steps", [(True, 1), (True, 3), (True, 8), (False, 8)])
def test_unroll_equals_stepping_the_agent(recurrent, steps):
    # unroll runs the intake and heads over the whole sequence at once and the LSTM `steps` steps to a loop
    # iteration (3 does not divide T); the result must not depend on either
    T, B = 5, 6
    agent = Agent(OBS_SPACE, n_actions=7, width=32, recurrent=recurrent)
    keys = jax.random.split(jax.random.PRNGKey(0), T)
    seq = [jax.tree.map(lambda x: x.reshape(B, *x.shape[2:]), OBS_SPACE.sample(k)) for k in keys]
    obs = jax.tree.map(lambda *xs: jnp.stack(xs), *seq)
    resets = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (T, B))
    params = agent.init(jax.random.PRNGKey(2), seq[0], agent.initial_carry(B), resets[0])
    logits, values, carry = unroll(agent, params, obs, agent.initial_carry(B), resets, steps)
    assert logits.shape == (T, B, 7) and values.shape == (T, B)
    step_carry = agent.initial_carry(B)
    for t in range(T):
        step_logits, step_value, step_carry = agent.apply(params, seq[t], step_carry, resets[t])
        np.testing.assert_allclose(logits[t], step_logits, atol=1e-5)
        np.testing.assert_allclose(values[t], step_value, atol=1e-5)
    np.testing.assert_allclose(carry[1], step_carry[1], atol=1e-5)


def test_lstm_step_is_flax_lstm_cell():
    # the same gates as flax's LSTMCell, its per-gate weights stacked (i, f, g, o) into one projection
    H, D, B = 8, 5, 4
    cell = nn.LSTMCell(H)
    x = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    carry = tuple(jax.random.normal(k, (B, H)) for k in jax.random.split(jax.random.PRNGKey(1)))
    p = cell.init(jax.random.PRNGKey(2), carry, x)["params"]
    p = jax.tree.map(lambda w: w + jax.random.normal(jax.random.PRNGKey(3), w.shape), p)  # biases not all zero
    w_input = jnp.concatenate([p[f"i{g}"]["kernel"] for g in "ifgo"], axis=1)
    w_hidden = jnp.concatenate([p[f"h{g}"]["kernel"] for g in "ifgo"], axis=1)
    bias = jnp.concatenate([p[f"h{g}"]["bias"] for g in "ifgo"])
    (c, h), out = lstm_step(w_hidden, carry, x @ w_input + bias, jnp.zeros(B, bool))
    (want_c, want_h), _ = cell.apply({"params": p}, carry, x)
    np.testing.assert_allclose(c, want_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out, h)


def test_lstm_forgets_where_episodes_reset():
    agent = Agent(OBS_SPACE, n_actions=7, width=16)
    obs = jax.tree.map(lambda x: x.reshape(6, *x.shape[2:]), OBS_SPACE.sample(jax.random.PRNGKey(0)))
    params = agent.init(jax.random.PRNGKey(1), obs, agent.initial_carry(6), jnp.zeros(6, bool))
    busy = jax.tree.map(lambda c: c + 1.0, agent.initial_carry(6))
    reset = jnp.asarray([True, False] * 3)
    a = agent.apply(params, obs, busy, reset)[0]
    fresh = agent.apply(params, obs, agent.initial_carry(6), jnp.zeros(6, bool))[0]
    np.testing.assert_allclose(a[reset], fresh[reset], atol=1e-6)
    assert not np.allclose(a[~reset], fresh[~reset])


@pytest.mark.parametrize("width, size, stride, dtype", [(64, 5, 2, jnp.float32), (16, 5, 2, jnp.float32),
                                                        (7, 5, 2, jnp.float32), (9, 3, 1, jnp.float32),
                                                        (3, 5, 3, jnp.float32), (11, 2, 4, jnp.float32),
                                                        (64, 5, 2, jnp.bfloat16)])  # fmt: skip
def test_width_conv_is_flax_conv(width, size, stride, dtype):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, width, 3))
    conv = heads.WidthConv(8, size, stride, dtype=dtype)
    params = conv.init(jax.random.PRNGKey(1), x)
    flax_conv = nn.Conv(8, (size,), strides=stride, dtype=dtype)
    # the same parameters from the same key, and the same result
    flax_params = flax_conv.init(jax.random.PRNGKey(1), x)
    jax.tree.map(np.testing.assert_array_equal, params, flax_params)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)  # a bias too
    ours, theirs = conv.apply(params, x), flax_conv.apply(params, x)
    assert ours.dtype == theirs.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 0.05
    np.testing.assert_allclose(ours.astype(np.float32), theirs.astype(np.float32), rtol=tol, atol=tol)


def test_intake_rejects_unsupported_spaces():
    agent = Agent(spaces.Dict(x=spaces.MultiConstant(1, 1)), n_actions=2)
    with pytest.raises(TypeError, match="MultiConstant"):
        agent.init(jax.random.PRNGKey(0), dict(x=jnp.zeros((1,))), agent.initial_carry(1), jnp.zeros(1, bool))


def test_config_is_checked():
    with pytest.raises(ValueError, match="agent"):
        PPOConfig(agent="transformer")
    with pytest.raises(ValueError, match="n_envs"):
        PPOConfig(n_envs=0)
    with pytest.raises(ValueError, match="dtype"):
        PPOConfig(dtype="float16")
    with pytest.raises(ValueError, match="minibatches"):
        make_train(PPOConfig(env="minimal", n_envs=6, minibatches=4))


# a small Waypoint in a box with near goals: quick to learn on a CPU
QUICK = PPOConfig(env="waypoint", n_envs=64, rollout=32, total_steps=64 * 32 * 60, agent="feedforward", width=64,
                  lr=1e-3, env_config=(("res", 16), ("geometries", "box")),
                  env_params=(("goal_distance", 0.8), ("max_length", 64)))  # fmt: skip


def test_ppo_learns_waypoint(tmp_path):
    run(QUICK, tmp_path, updates_per_chunk=10, show_progress=False)
    m = read_metrics(tmp_path)
    assert len(m["update"]) == 60
    np.testing.assert_array_equal(m["step"], np.arange(1, 61) * 64 * 32)
    returns = m["episode_return"][np.isfinite(m["episode_return"])]
    early, late = returns[:3].mean(), returns[-3:].mean()
    assert late > 2.0 and late > 5 * early, f"mean episode return went from {early:.2f} to {late:.2f}"


def test_lstm_ppo_runs_and_checkpoints_round_trip(tmp_path):
    config = dataclasses.replace(QUICK, agent="lstm", width=16, total_steps=8 * 32 * 2, n_envs=8, minibatches=2,
                                 value_target="vtrace")  # fmt: skip
    state, train = run(config, tmp_path, updates_per_chunk=1, show_progress=False)
    assert int(state.update) == 2
    restored = restore(latest_checkpoint(tmp_path), train.init(jax.random.PRNGKey(5)))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    save(state, tmp_path)  # saving again over the same update is fine


def test_resumed_run_equals_uninterrupted(tmp_path):
    config = dataclasses.replace(QUICK, total_steps=64 * 32 * 4, n_envs=16, rollout=8)
    whole, _ = run(config, tmp_path / "whole", updates_per_chunk=2, show_progress=False)
    run(config, tmp_path / "parts", updates_per_chunk=2, max_updates=2, show_progress=False)
    resumed, _ = run(config, tmp_path / "parts", resume=True, updates_per_chunk=2, show_progress=False)
    assert int(resumed.update) == int(whole.update)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    with (tmp_path / "whole" / "metrics.csv").open() as f, (tmp_path / "parts" / "metrics.csv").open() as g:
        rows_whole, rows_parts = list(csv.reader(f)), list(csv.reader(g))
    assert [r[:3] for r in rows_whole] == [r[:3] for r in rows_parts]  # update, step, episode_return


def test_train_and_demo_commands(tmp_path, capsys):
    logdir = tmp_path / "run"
    argv = ["train", "minimal", "--total-steps", "256", "--n-envs", "8", "--rollout", "8", "--agent", "feedforward",
            "--logdir", str(logdir)]  # fmt: skip
    assert cli.main(argv) == 0
    assert "metrics.csv" in capsys.readouterr().out
    header = (logdir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["update", "step", "episode_return"]
    out = tmp_path / "agent.gif"
    assert cli.main(["demo", "--agent", str(logdir), "--n-envs", "2", "--steps", "5", "--out", str(out)]) == 0
    assert out.exists()
    with pytest.raises(SystemExit):
        cli.main(["demo", "--agent", str(tmp_path / "nothing"), "--out", str(out)])
