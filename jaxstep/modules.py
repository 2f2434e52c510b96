"""Pieces most envs are built from: movement, observations, spawns and lifespans, as pure functions.

Each is a function of arrays (or an `(init, apply)` pair with a small NamedTuple state), so an env is the
core kernels plus a few calls to these. Shapes: n_envs envs of n_agents agents; units metres, degrees, seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep.ffi.types import AGENT_RADIUS, Agents, Render

# The 7 actions: noop, strafe left, strafe right, forward, backward, turn left, turn right.
N_ACTIONS = 7
ACTION_DIRECTIONS = np.array([[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0], [0, 0], [0, 0]], np.float32)  # agent frame
ACTION_TURNS = np.array([0, 0, 0, 0, 0, 1, -1], np.float32)  # +1 turns anticlockwise (left)


def to_global_frame(angles: jax.Array, v: jax.Array) -> jax.Array:
    """Vectors v (..., 2) in the frame of agents facing `angles` (...) degrees, in the world frame."""
    a = jnp.deg2rad(angles)
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def to_local_frame(angles: jax.Array, v: jax.Array) -> jax.Array:
    """World-frame vectors v (..., 2) in the frame of agents facing `angles` (...) degrees (x forward, y left)."""
    a = jnp.deg2rad(angles)
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def valid_actions(actions: jax.Array, n_actions: int = N_ACTIONS) -> tuple[jax.Array, jax.Array]:
    """(actions, invalid): out-of-range actions replaced by the noop (0), and a mask of where that happened."""
    invalid = (actions < 0) | (actions >= n_actions)
    return jnp.where(invalid, 0, actions), invalid


def simple_movement(agents: Agents, actions: jax.Array, fps: float, speed=10.0, ang_speed=180.0) -> Agents:
    """Sets velocity = speed/fps * the action's direction and angvelocity = ang_speed/fps * its turn.

    actions: (n_envs, n_agents) ints in [0, 7). speed in metres per second, ang_speed in degrees per second.
    """
    velocity = to_global_frame(agents.angles, speed / fps * jnp.asarray(ACTION_DIRECTIONS)[actions])
    angvelocity = ang_speed / fps * jnp.asarray(ACTION_TURNS)[actions]
    return Agents(agents.angles, agents.positions, velocity, angvelocity)


def momentum_movement(
    agents: Agents, actions: jax.Array, fps: float, accel=5.0, ang_accel=180.0, decay=0.125
) -> Agents:
    """Velocity decays by `decay` each step, then gains accel/fps along the action's direction (same for turning)."""
    push = to_global_frame(agents.angles, accel / fps * jnp.asarray(ACTION_DIRECTIONS)[actions])
    turn = ang_accel / fps * jnp.asarray(ACTION_TURNS)[actions]
    keep = 1 - decay
    return Agents(agents.angles, agents.positions, keep * agents.velocity + push, keep * agents.angvelocity + turn)


# ---------------------------------------------------------------------------------------------------------
# Observations


def downsample(x: jax.Array, subsample: int, axis: int = -1) -> jax.Array:
    """Averages each run of `subsample` neighbours along `axis`; its length must be a multiple of `subsample`."""
    axis = axis % x.ndim
    shape = (*x.shape[:axis], x.shape[axis] // subsample, subsample, *x.shape[axis + 1 :])
    return x.reshape(shape).mean(axis + 1)


def rgb(render: Render, subsample: int = 1) -> jax.Array:
    """(n_envs, n_agents, 1, res // subsample, 3) linear RGB in [0, 1], channels last."""
    return downsample(render.screen, subsample, axis=-2)[:, :, None]


def depth(render: Render, subsample: int = 1, max_depth: float = 10.0) -> jax.Array:
    """(n_envs, n_agents, 1, res // subsample, 1): 1 at the camera's near plane, falling to 0 at max_depth metres."""
    d = 1 - jnp.clip((render.distances - AGENT_RADIUS) / max_depth, 0, 1)
    return downsample(d, subsample)[:, :, None, :, None]


def imu(agents: Agents, speed_scale: float = 10.0, ang_scale: float = 360.0) -> jax.Array:
    """(n_envs, n_agents, 3): angular velocity / ang_scale, then velocity in the agent's frame / speed_scale."""
    local = to_local_frame(agents.angles, agents.velocity) / speed_scale
    return jnp.concatenate([agents.angvelocity[..., None] / ang_scale, local], -1)


# ---------------------------------------------------------------------------------------------------------
# Spawns


class Spawns(NamedTuple):
    """Precomputed spawn points of each distinct geometry: positions (G, n_spawns, 2) metres, angles (G, n_spawns)."""

    positions: jax.Array
    angles: jax.Array


def free_points(geometry: dict, clearance: float = 1.5 * AGENT_RADIUS) -> np.ndarray:
    """(P, 2) centres of free mask cells at least `clearance` metres from every wall."""
    masks, res = np.asarray(geometry["masks"]), float(geometry["res"])
    i, j = np.nonzero(masks > 0)
    points = res * np.stack([j + 0.5, masks.shape[0] - (i + 0.5)], -1)
    walls = np.asarray(geometry["walls"], np.float64)
    if len(walls) and len(points):
        a, ab = walls[None, :, 0], walls[None, :, 1] - walls[None, :, 0]
        t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
        gap = np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)
        points = points[gap >= clearance]
    if not len(points):
        raise ValueError("geometries: a geometry has no free mask cell far enough from its walls to spawn an agent")
    return points


def random_spawns(geometries: Sequence[dict], n_spawns: int = 100, seed: int = 0) -> Spawns:
    """n_spawns random free points (and angles in [-180, 180)) of each of the distinct geometries, all different
    where the geometry has that many."""
    rng = np.random.default_rng(seed)
    positions = []
    for g in geometries:
        points = rng.permutation(free_points(g))
        positions.append(points[np.arange(n_spawns) % len(points)])
    angles = rng.uniform(-180, 180, (len(geometries), n_spawns))
    return Spawns(jnp.asarray(np.stack(positions), jnp.float32), jnp.asarray(angles, jnp.float32))


def respawn(
    agents: Agents, spawns: Spawns, env_geometry: jax.Array, mask: jax.Array, key: jax.Array, tries: int = 8
) -> Agents:
    """Agents where mask (n_envs, n_agents) is true moved to a random spawn of their env's geometry, at rest.

    Agents of one env respawning together take spawns n_spawns / n_agents apart in the table, so never the same
    one; of `tries` random offsets, each env takes the one that leaves the most room between its agents.
    """
    n, A = mask.shape
    n_spawns = spawns.angles.shape[1]
    offsets = jax.random.randint(key, (n, tries), 0, n_spawns)
    choice = (offsets[:, None, :] + (jnp.arange(A) * max(1, n_spawns // A))[None, :, None]) % n_spawns  # (n, A, K)
    g = env_geometry[:, None, None]
    candidates = spawns.positions[g, choice]  # (n, A, K, 2)
    # distance from each candidate to each agent that stays, (n, A, K, A)
    gap = jnp.linalg.norm(candidates[:, :, :, None] - agents.positions[:, None, None], axis=-1)
    gap = jnp.where((mask[:, :, None, None] & ~mask[:, None, None, :]), gap, jnp.inf)
    # and between the candidates of agents respawning together, (n, A, K, A)
    mutual = jnp.linalg.norm(candidates[:, :, None] - candidates[:, None], axis=-1).transpose(0, 1, 3, 2)
    together = mask[:, :, None] & mask[:, None, :] & ~jnp.eye(A, dtype=bool)
    gap = jnp.minimum(gap, jnp.where(together[:, :, None, :], mutual, jnp.inf))
    best = jnp.argmax(gap.min(axis=(1, 3)), axis=-1)  # (n,)
    choice = jnp.take_along_axis(choice, best[:, None, None], -1)[..., 0]  # (n, A)
    positions = jnp.where(mask[..., None], spawns.positions[env_geometry[:, None], choice], agents.positions)
    angles = jnp.where(mask, spawns.angles[env_geometry[:, None], choice], agents.angles)
    velocity = jnp.where(mask[..., None], 0.0, agents.velocity)
    angvelocity = jnp.where(mask, 0.0, agents.angvelocity)
    return Agents(angles, positions, velocity, angvelocity)


# ---------------------------------------------------------------------------------------------------------
# Lifespans


class Lifespans(NamedTuple):
    """age: (n_envs, n_agents) steps since each agent's reset; limit: the lifespan it was given."""

    age: jax.Array
    limit: jax.Array


def lifespans_init(key: jax.Array, shape: tuple[int, ...], max_lifespan, min_lifespan=None) -> Lifespans:
    """Fresh lifespans drawn uniformly from [min_lifespan, max_lifespan) (min defaults to half of max)."""
    min_lifespan = max_lifespan // 2 if min_lifespan is None else min_lifespan
    limit = jax.random.randint(key, shape, min_lifespan, jnp.maximum(max_lifespan, min_lifespan + 1))
    return Lifespans(jnp.zeros(shape, jnp.int32), limit)


def lifespans_step(
    state: Lifespans, key: jax.Array, reset: jax.Array, max_lifespan, min_lifespan=None
) -> tuple[Lifespans, jax.Array]:
    """Ages every agent by a step; returns the new state and which agents outlived their lifespan (or were
    `reset` for other reasons): those get age 0 and a new lifespan."""
    age = state.age + 1
    expired = (age >= state.limit) | reset
    fresh = lifespans_init(key, age.shape, max_lifespan, min_lifespan)
    return Lifespans(jnp.where(expired, 0, age), jnp.where(expired, fresh.limit, state.limit)), expired


__all__ = [
    "N_ACTIONS", "ACTION_DIRECTIONS", "ACTION_TURNS", "to_global_frame", "to_local_frame", "valid_actions",
    "simple_movement", "momentum_movement", "downsample", "rgb", "depth", "imu", "Spawns", "free_points",
    "random_spawns", "respawn", "Lifespans", "lifespans_init", "lifespans_step",
]  # fmt: skip
