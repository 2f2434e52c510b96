"""The env building blocks in jaxstep.modules, against megastep's formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstep import core, modules, toys
from jaxstep.ffi.types import AGENT_RADIUS, Agents, Render


def facing(angle: float, velocity=(0.0, 0.0), angvelocity=0.0) -> Agents:
    return Agents(
        jnp.asarray([[angle]], jnp.float32), jnp.zeros((1, 1, 2)), jnp.asarray([[velocity]], jnp.float32),
        jnp.asarray([[angvelocity]], jnp.float32),
    )  # fmt: skip


@pytest.mark.parametrize(
    "action, velocity, angvelocity",
    [(0, (0, 0), 0), (1, (0, 1), 0), (2, (0, -1), 0), (3, (1, 0), 0), (4, (-1, 0), 0), (5, (0, 0), 1), (6, (0, 0), -1)],
)
def test_simple_movement_sets_velocity_from_the_action(action, velocity, angvelocity):
    moved = modules.simple_movement(facing(90.0), jnp.asarray([[action]]), fps=10)
    # facing +y: forward is +y, left is -x; speed 10/fps m/s, turning 180/fps deg/s
    local_to_world = np.array([[0, -1], [1, 0]])
    np.testing.assert_allclose(moved.velocity[0, 0], local_to_world @ np.array(velocity) * 1.0, atol=1e-6)
    np.testing.assert_allclose(moved.angvelocity[0, 0], 18.0 * angvelocity)


def test_momentum_movement_decays_then_accelerates():
    agents = facing(0.0, velocity=(2.0, 1.0), angvelocity=40.0)
    moved = modules.momentum_movement(agents, jnp.asarray([[3]]), fps=10)
    np.testing.assert_allclose(moved.velocity[0, 0], [0.875 * 2 + 0.5, 0.875 * 1], atol=1e-6)
    np.testing.assert_allclose(moved.angvelocity[0, 0], 0.875 * 40)
    moved = modules.momentum_movement(agents, jnp.asarray([[6]]), fps=10)
    np.testing.assert_allclose(moved.angvelocity[0, 0], 0.875 * 40 - 18)


def test_frames_round_trip():
    rng = np.random.default_rng(0)
    angles, v = jnp.asarray(rng.uniform(-180, 180, 50)), jnp.asarray(rng.normal(size=(50, 2)))
    np.testing.assert_allclose(modules.to_local_frame(angles, modules.to_global_frame(angles, v)), v, atol=1e-5)


def test_valid_actions_replaces_out_of_range_with_noop():
    actions, invalid = modules.valid_actions(jnp.asarray([[-1, 0, 6, 7]]))
    np.testing.assert_array_equal(actions, [[0, 0, 6, 0]])
    np.testing.assert_array_equal(invalid, [[True, False, False, True]])


def _render(distances, screen=None) -> Render:
    d = jnp.asarray(distances, jnp.float32)[None, None]
    screen = jnp.zeros((*d.shape, 3)) if screen is None else jnp.asarray(screen, jnp.float32)[None, None]
    return Render(jnp.zeros(d.shape, jnp.int32), d, d, d, screen)


def test_depth_is_one_at_the_near_plane_and_zero_past_max_depth():
    r = _render([AGENT_RADIUS, AGENT_RADIUS + 5, AGENT_RADIUS + 10, np.inf])
    np.testing.assert_allclose(modules.depth(r)[0, 0, 0, :, 0], [1.0, 0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(modules.depth(r, subsample=2)[0, 0, 0, :, 0], [0.75, 0.0], atol=1e-6)


def test_rgb_averages_subsampled_pixels_channels_last():
    screen = np.arange(12, dtype=np.float32).reshape(4, 3)
    obs = modules.rgb(_render(np.ones(4), screen), subsample=2)
    assert obs.shape == (1, 1, 1, 2, 3)
    np.testing.assert_allclose(obs[0, 0, 0], [screen[:2].mean(0), screen[2:].mean(0)])


def test_imu_reports_scaled_velocity_in_the_agent_frame():
    obs = modules.imu(facing(90.0, velocity=(0.0, 5.0), angvelocity=90.0))
    np.testing.assert_allclose(obs[0, 0], [0.25, 0.5, 0.0], atol=1e-6)


def test_spawns_are_clear_of_walls_and_respawn_rests_only_masked_agents():
    spawns = modules.random_spawns([toys.box()], n_spawns=50)
    p = np.asarray(spawns.positions[0])
    assert ((p > 1 + AGENT_RADIUS) & (p < 6 - AGENT_RADIUS)).all()
    agents = core.agents(2, 2, positions=jnp.full((2, 2, 2), 3.0))
    agents = Agents(agents.angles, agents.positions, jnp.ones((2, 2, 2)), jnp.ones((2, 2)))
    mask = jnp.asarray([[True, False], [False, True]])
    moved = modules.respawn(agents, spawns, jnp.zeros(2, jnp.int32), mask, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(moved.velocity)[np.asarray(mask)], 0.0)
    np.testing.assert_array_equal(np.asarray(moved.velocity)[~np.asarray(mask)], 1.0)
    np.testing.assert_array_equal(np.asarray(moved.positions)[~np.asarray(mask)], 3.0)
    assert (np.asarray(moved.positions)[np.asarray(mask)] != 3.0).any()


def test_lifespans_expire_between_half_and_full_max():
    key = jax.random.PRNGKey(0)
    state = modules.lifespans_init(key, (1000,), max_lifespan=20)
    assert (np.asarray(state.limit) >= 10).all() and (np.asarray(state.limit) < 20).all()
    expiries = np.zeros(1000, int)
    first_expiry = np.full(1000, -1)
    for t in range(1, 41):
        key, sub = jax.random.split(key)
        state, expired = modules.lifespans_step(state, sub, jnp.zeros(1000, bool), 20)
        expired = np.asarray(expired)
        first_expiry[(first_expiry < 0) & expired] = t
        expiries += expired
    assert ((first_expiry >= 10) & (first_expiry < 20)).all()
    assert (expiries >= 2).all()
    forced = np.zeros(1000, bool)
    forced[:5] = True
    state, expired = modules.lifespans_step(state, key, jnp.asarray(forced), 20)
    assert np.asarray(expired)[:5].all() and (np.asarray(state.age)[:5] == 0).all()
