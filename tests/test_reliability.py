"""Reliability: no tunnelling over a million agent-steps, the FFI kernels against the reference on degenerate
input, clear errors for bad input at every public entry point, and bit-identical rollouts per key.

See docs/reliability.md for what is checked, the rules for invalid traced inputs and the measured numbers.
A bug found here and not yet fixed is recorded as a test marked pytest.mark.xfail(strict=True) with a reason
starting "BUG": it fails (as expected) until the bug is fixed, then XPASS fails the run so the marker gets removed.
"""

import dataclasses
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_checks import assert_physics_close, assert_renders_close

import jaxstep
from jaxstep import core, envs, geometry, modules, scene, toys
from jaxstep.ffi import calls, reference
from jaxstep.ffi.types import AGENT_RADIUS, MODEL_LINES

R = float(np.float32(AGENT_RADIUS))  # 0.106 m
FPS = 10.0


# ---------------------------------------------------------------------------------------------------------
# 1. No tunnelling: random and adversarial driving in mazes and floor plans, checked after every step
#
# 16 mazes and 16 floor plans, 1024 envs of 4 agents: 4096 agents, STEPS steps each, driven by `_drive` inside one
# jitted lax.scan over core.physics (ffi backend, on the default device). After every step, every agent's centre
# path (old -> new position) is tested against every wall of its env, and every pair of agents for overlap.
# JAXSTEP_TUNNEL_ENVS and JAXSTEP_TUNNEL_STEPS scale it up (e.g. on a GPU; see docs/reliability.md).

N_ENVS = int(os.environ.get("JAXSTEP_TUNNEL_ENVS", 1024))
STEPS = int(os.environ.get("JAXSTEP_TUNNEL_STEPS", 250))
N_AGENTS = 4
N_MODES = 8  # see _drive


def _tunnel_geometries() -> list[dict]:
    return geometry.mazes(16, seed=11) + geometry.floorplans(16, seed=11)


def _padded_walls(geometries: list[dict]) -> np.ndarray:
    """(G, W, 2, 2) float32 walls of each geometry, padded with NaN walls (which never cross or come near)."""
    w = max(len(g["walls"]) for g in geometries)
    out = np.full((len(geometries), w, 2, 2), np.nan, np.float32)
    for i, g in enumerate(geometries):
        out[i, : len(g["walls"])] = g["walls"]
    return out


def _np_wall_distance(points: np.ndarray, walls: np.ndarray) -> np.ndarray:
    """(P,) distance from each of points (P, 2) to the nearest of walls (W, 2, 2), in float64."""
    a, ab = walls[None, :, 0], walls[None, :, 1] - walls[None, :, 0]
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


def _spawn_pool(g: dict, rng: np.random.Generator, n: int = 400) -> np.ndarray:
    """(P, 2) float32 spawn points: free mask cells, points touching a wall (just over R from it, endpoints
    included) and points in corners and doorways (just over R from a wall's endpoint), all at least R from every
    wall once rounded to float32."""
    walls = np.asarray(g["walls"], np.float64)
    free = modules.free_points(g)
    free = free[rng.integers(len(free), size=n)]

    w = rng.integers(len(walls), size=n)
    t = rng.uniform(0, 1, n)
    at_end = rng.random(n) < 0.2
    t[at_end] = rng.integers(0, 2, at_end.sum())  # beside an endpoint, exactly
    a, b = walls[w, 0], walls[w, 1]
    normal = (b - a)[:, ::-1] * [-1, 1] / np.linalg.norm(b - a, axis=-1, keepdims=True)
    side = rng.choice([-1.0, 1.0], size=(n, 1))
    gap = R * (1 + 10 ** rng.uniform(-4, -2, (n, 1)))
    touching = a + t[:, None] * (b - a) + side * gap * normal

    ends = walls.reshape(-1, 2)[rng.integers(2 * len(walls), size=n)]
    angle = rng.uniform(0, 2 * np.pi, n)
    corners = ends + gap * np.stack([np.cos(angle), np.sin(angle)], -1)

    points = np.concatenate([free, touching, corners]).astype(np.float32)
    return points[_np_wall_distance(points.astype(np.float64), walls) >= R * (1 + 1e-5)]


def _spawns(geometries: list[dict], n_envs: int, n_agents: int, seed: int = 0) -> np.ndarray:
    """(n_envs, n_agents, 2) positions, env e in geometries[e % G]: no agent within R of a wall or 2R of another.
    Half the envs get a pair of agents just over 2R apart (head-on or side by side once driven)."""
    rng = np.random.default_rng(seed)
    pools = [_spawn_pool(g, rng) for g in geometries]
    out = np.zeros((n_envs, n_agents, 2), np.float32)
    for e in range(n_envs):
        g = e % len(geometries)
        walls = np.asarray(geometries[g]["walls"], np.float64)
        placed: list[np.ndarray] = []
        while len(placed) < n_agents:
            if placed and e % 2 and len(placed) == 1:
                angle = rng.uniform(0, 2 * np.pi)
                p = placed[0] + 2 * R * (1 + 10 ** rng.uniform(-3, -2)) * np.array([np.cos(angle), np.sin(angle)])
                p = p.astype(np.float32)
                if _np_wall_distance(p[None].astype(np.float64), walls)[0] < R * (1 + 1e-5):
                    p = pools[g][rng.integers(len(pools[g]))]
            else:
                p = pools[g][rng.integers(len(pools[g]))]
            if all(np.linalg.norm(p.astype(np.float64) - o) > 2 * R * (1 + 1e-5) for o in placed):
                placed.append(p)
        out[e] = placed
    return out


class _Walls:
    """Each env's walls (E, 1, W) as separate coordinates, so that every check is one fused (E, A, W) loop."""

    def __init__(self, walls: np.ndarray):  # (E, W, 2, 2), NaN-padded
        self.ax, self.ay, self.bx, self.by = (jnp.asarray(walls[:, None, :, i, j]) for i in (0, 1) for j in (0, 1))
        self.ex, self.ey = self.bx - self.ax, self.by - self.ay

    def nearest(self, p):
        """(index, distance) of each agent's nearest wall; p (E, A, 2). NaN (padding) walls are never nearest."""
        qx, qy = p[..., 0, None] - self.ax, p[..., 1, None] - self.ay
        t = jnp.clip((qx * self.ex + qy * self.ey) / (self.ex * self.ex + self.ey * self.ey), 0, 1)
        dx, dy = qx - t * self.ex, qy - t * self.ey
        d2 = jnp.where(jnp.isnan(t), jnp.inf, dx * dx + dy * dy)
        return jnp.argmin(d2, -1), jnp.sqrt(d2.min(-1))

    def crossed(self, p, q):
        """(E, A) bool: the segment p -> q properly crosses some wall (each strictly straddles the other's line)."""
        px, py, qx, qy = p[..., 0, None], p[..., 1, None], q[..., 0, None], q[..., 1, None]
        ax, ay, bx, by = self.ax, self.ay, self.bx, self.by

        def orient(x0, y0, x1, y1, x, y):
            return (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)

        straddles_path = orient(px, py, qx, qy, ax, ay) * orient(px, py, qx, qy, bx, by) < 0
        straddles_wall = orient(ax, ay, bx, by, px, py) * orient(ax, ay, bx, by, qx, qy) < 0
        return (straddles_path & straddles_wall).any(-1)

    def pick(self, index):
        """(a, b): (E, A, 2) endpoints of wall `index` (E, A) of each agent's env."""
        take = lambda x: jnp.take_along_axis(x[:, 0], index, 1)  # noqa: E731
        return (jnp.stack([take(self.ax), take(self.ay)], -1), jnp.stack([take(self.bx), take(self.by)], -1))


def _unit(x):
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _pair_distances(p):
    """(E, A, A) distances between agents, inf on the diagonal."""
    d = jnp.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
    return jnp.where(jnp.eye(p.shape[1], dtype=bool), jnp.inf, d)


def _drive(key, p, prev, walls: _Walls, nearest):
    """Velocities (E, A, 2) in m/s for agents at p (E, A, 2), whose nearest walls are `nearest` (E, A).

    Each agent picks one of N_MODES at random every step: 0 a random direction at 0.1-500 m/s (log-uniform); 1
    straight at its nearest wall; 2 grazing that wall, 0.001-10 degrees off parallel; 3 at that wall's nearer
    endpoint (a corner, a doorway's jamb) give or take 1.5 radii sideways; 4 straight at its nearest agent
    (head-on); 5 following that agent at 1-1.5 times its last velocity (a chase); 6 its own last velocity (straight
    runs); 7 standing still. Modes 1-4 move at 10-50 m/s: 1-5 m per step at 10 fps, about a maze cell or more.
    """
    E, A = p.shape[:2]
    k = jax.random.split(key, 3)
    a, b = walls.pick(nearest)
    ab = b - a
    t = jnp.clip(jnp.sum((p - a) * ab, -1, keepdims=True) / jnp.sum(ab * ab, -1, keepdims=True), 0, 1)
    to_wall = _unit(a + t * ab - p)
    end = jnp.where(jnp.linalg.norm(p - a, axis=-1, keepdims=True) < jnp.linalg.norm(p - b, axis=-1, keepdims=True),
                    a, b)  # fmt: skip
    to_end = _unit(end - p)
    envs_ = jnp.arange(E)[:, None]
    other = jnp.argmin(_pair_distances(p), -1)

    u = jax.random.uniform(k[0], (E, A, 5))
    angle = 2 * jnp.pi * u[..., 0, None]
    speed = 10 + 40 * u[..., 1, None]
    graze = jnp.deg2rad(10 ** (-3 + 4 * u[..., 2, None]))
    along = _unit(ab) * jnp.where(u[..., 3, None] < 0.5, -1.0, 1.0)
    sideways = (3 * u[..., 4, None] - 1.5) * R * jnp.stack([-to_end[..., 1], to_end[..., 0]], -1)
    candidates = jnp.stack([
        jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], -1) * 10 ** (-1 + np.log10(5000) * u[..., 1, None]),
        to_wall * speed,
        (jnp.cos(graze) * along + jnp.sin(graze) * to_wall) * speed,
        _unit(end + sideways - p) * speed,
        _unit(p[envs_, other] - p) * speed,
        prev[envs_, other] * (1 + 0.5 * u[..., 4, None]),
        prev,
        jnp.zeros_like(p),
    ])  # fmt: skip
    mode = jax.random.randint(k[1], (E, A), 0, N_MODES)
    return jnp.take_along_axis(candidates, mode[None, ..., None], 0)[0]


VIOLATIONS = {
    # the brief's tunnelling: a centre path crossing a wall, two agents' discs coming to overlap
    "wall_crossings": "an agent's centre path (old -> new position) crossed a wall",
    "agent_overlaps": "two agents' centres ended closer than 2R when they were not before the step",
    "deep_agent_overlaps": "two agents' centres were closer than 0.98 * 2R (counted per agent-step)",
    "agent_passes": "two agents that started apart came closer than 0.98 * 2R during the step (each moving at full "
    "speed until its progress ran out, then standing): one ran into or through the other",
    # an agent's disc overlapping a wall: its centre stays on its side, but its camera (near plane R) sees through
    "wall_overlaps": "an agent's centre ended closer than R to a wall when it was not before the step",
    "deep_wall_overlaps": "an agent's centre was closer than 0.98 R to a wall (counted per agent-step)",
    "nonfinite": "an agent's position became NaN or inf",
}


def _tunnel_rollout(backend: str = "ffi", n_envs: int = N_ENVS, steps: int = STEPS, seed: int = 0) -> dict:
    """Runs the driven rollout; returns the agent-steps checked, how many broke each rule of VIOLATIONS, and the
    first example of each (step, env, agent, geometry, and its env's positions and velocities before the step)."""
    geometries = _tunnel_geometries()
    s = scene.scenery([geometries[e % len(geometries)] for e in range(n_envs)], n_agents=N_AGENTS)
    walls = _Walls(_padded_walls(geometries)[np.arange(n_envs) % len(geometries)])
    positions = _spawns(geometries, n_envs, N_AGENTS, seed)
    angles = np.random.default_rng(seed).uniform(-180, 180, (n_envs, N_AGENTS))
    agents = core.agents(n_envs, N_AGENTS, positions=positions, angles=angles)

    def step(carry, key):
        agents, prev, nearest, wall_before = carry
        before = agents.positions
        velocity = _drive(key, before, prev, walls, nearest)
        spin = jax.random.normal(jax.random.fold_in(key, 1), agents.angles.shape) * 360
        moved, progress = core.physics(s, dataclasses.replace(agents, velocity=velocity, angvelocity=spin), FPS,
                                       backend)  # fmt: skip
        after = moved.positions
        nearest, wall_after = walls.nearest(after)
        pair_before, pair_after = _pair_distances(before), _pair_distances(after)
        flags = dict(
            wall_crossings=walls.crossed(before, after),
            agent_overlaps=((pair_after < 2 * R) & (pair_before >= 2 * R)).any(-1),
            deep_agent_overlaps=(pair_after < 0.98 * 2 * R).any(-1),
            agent_passes=((core.closest_approach(before, velocity / FPS, progress) < 0.98 * 2 * R)
                          & (pair_before >= 2 * R)).any(-1),  # fmt: skip
            wall_overlaps=(wall_after < R) & (wall_before >= R),
            deep_wall_overlaps=wall_after < 0.98 * R,
            nonfinite=~jnp.isfinite(after).all(-1),
        )
        counts = {k: f.sum() for k, f in flags.items()}
        first = {k: jnp.argmax(f.ravel()) for k, f in flags.items()}
        examples = {k: (before[i // N_AGENTS], velocity[i // N_AGENTS]) for k, i in first.items()}
        record = (counts, first, examples, wall_after.min(), pair_after.min())
        return (moved, velocity, nearest, wall_after), record

    @jax.jit
    def run(agents, key):
        carry = (agents, jnp.zeros_like(agents.velocity), *walls.nearest(agents.positions))
        return jax.lax.scan(step, carry, jax.random.split(key, steps))

    start = time.perf_counter()
    (final, *_), (counts, first, examples, wall_min, pair_min) = jax.block_until_ready(
        run(agents, jax.random.PRNGKey(seed))
    )
    seconds = time.perf_counter() - start
    out = dict(agent_steps=n_envs * N_AGENTS * steps, seconds=seconds, counts={}, examples={},
               wall_min=float(wall_min.min()), pair_min=float(pair_min.min()),
               final_finite=bool(np.isfinite(np.asarray(final.positions)).all()))  # fmt: skip
    for k, c in counts.items():
        c = np.asarray(c)
        out["counts"][k] = int(c.sum())
        if c.any():
            t = int(np.argmax(c > 0))
            i = int(first[k][t])
            before, velocity = (np.asarray(x[t]) for x in examples[k])
            out["examples"][k] = dict(step=t, env=i // N_AGENTS, agent=i % N_AGENTS,
                                      geometry=(i // N_AGENTS) % len(geometries),
                                      positions=before.tolist(), velocity=velocity.tolist())  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tunnel_run():
    result = _tunnel_rollout()
    print(
        f"\ntunnelling rollout on {jax.default_backend()}: {result['agent_steps']} agent-steps in "
        f"{result['seconds']:.1f} s (compile included); "
        f"counts {result['counts']}; closest approach to a wall {result['wall_min']:.4f} m, "
        f"between agents {result['pair_min']:.4f} m"
    )
    return result


def _describe(run: dict, kind: str) -> str:
    return (
        f"{VIOLATIONS[kind]}: {run['counts'][kind]} times in {run['agent_steps']} agent-steps; "
        f"first: {run['examples'].get(kind)}"
    )


def test_no_agent_centre_crosses_a_wall_in_a_million_driven_steps(tunnel_run):
    assert tunnel_run["agent_steps"] >= 1_000_000
    assert tunnel_run["counts"]["wall_crossings"] == 0, _describe(tunnel_run, "wall_crossings")


def test_positions_stay_finite_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["nonfinite"] == 0, _describe(tunnel_run, "nonfinite")
    assert tunnel_run["final_finite"]


def test_agents_never_come_to_overlap_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["agent_overlaps"] == 0, _describe(tunnel_run, "agent_overlaps")
    assert tunnel_run["counts"]["deep_agent_overlaps"] == 0, _describe(tunnel_run, "deep_agent_overlaps")


def test_agents_never_run_into_or_through_each_other_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["agent_passes"] == 0, _describe(tunnel_run, "agent_passes")


def test_agent_discs_never_come_to_overlap_walls_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["wall_overlaps"] == 0, _describe(tunnel_run, "wall_overlaps")
    assert tunnel_run["counts"]["deep_wall_overlaps"] == 0, _describe(tunnel_run, "deep_wall_overlaps")


def _one_wall(walls, lights=((0.0, 0.0),)) -> dict:
    return dict(walls=np.asarray(walls, np.float64), lights=np.asarray(lights, np.float64))


def _move(s, positions, velocity, backend, fps=FPS):
    positions = np.asarray(positions, np.float32)
    agents = core.agents(positions.shape[0], positions.shape[1], positions=positions)
    moved, progress = core.physics(s, dataclasses.replace(agents, velocity=jnp.asarray(velocity, jnp.float32)),
                                   fps, backend)  # fmt: skip
    return np.asarray(moved.positions), np.asarray(progress)


@pytest.mark.parametrize("backend", ["ffi", "reference"])
def test_follower_stops_short_of_a_leader_stopped_by_a_wall(backend):
    s = scene.scenery([toys.box()], n_agents=2)  # the box's right wall is at x = 6
    after, _ = _move(s, [[[5.5, 3.5], [5.2, 3.5]]], [[[20.0, 0.0], [20.0, 0.0]]], backend)
    gap = np.linalg.norm(after[0, 0] - after[0, 1])
    assert gap >= 2 * R, f"centres {gap:.4f} m apart after the step, less than 2R = {2 * R:.4f}: {after.tolist()}"


@pytest.mark.parametrize("backend", ["ffi", "reference"])
def test_agent_grazing_past_a_wall_end_stops_short_of_the_wall(backend):
    s = scene.scenery([_one_wall([[[0.0, 0.0], [0.0, 2.0]]])])
    # 0.3 m from the wall, heading for a point just past its top end: (0.3, 0.3) -> (0, 2.3)
    after, progress = _move(s, [[[0.3, 0.3]]], [[[-3.0, 20.0]]], backend)
    x, y = after[0, 0]
    assert 0 < y < 2, "stopped beside the wall"
    assert x >= R, f"centre {x:.4f} m from the wall (progress {progress[0, 0]:.3f}), less than R = {R:.4f}"


@pytest.mark.parametrize("backend", ["ffi", "reference"])
@pytest.mark.parametrize("gap, passes", [(2 * R * 0.99, False), (2 * R * 1.05, True)])
def test_doorways_narrower_than_an_agent_cannot_be_squeezed_through(backend, gap, passes):
    # two walls along y = 0 with a gap of `gap` around x = 0; the agent is driven at it from below for 50 steps
    walls = [[[-3.0, 0.0], [-gap / 2, 0.0]], [[gap / 2, 0.0], [3.0, 0.0]]]
    s = scene.scenery([_one_wall(walls)], n_agents=1)
    agents = core.agents(1, 1, positions=np.asarray([[[0.0, -1.0]]], np.float32))

    def step(agents, velocity):
        agents, _ = core.physics(s, dataclasses.replace(agents, velocity=velocity), FPS, backend)
        return agents, agents.positions

    velocity = jnp.broadcast_to(jnp.asarray([0.0, 4.0]), (50, 1, 1, 2)).astype(jnp.float32)
    _, path = jax.jit(lambda a, v: jax.lax.scan(step, a, v))(agents, velocity)
    y = np.asarray(path)[:, 0, 0, 1]
    if passes:
        assert y[-1] > 0, "an agent fits through a gap wider than 2R"
    else:
        assert (y < 0).all(), f"squeezed through a {gap:.4f} m gap: y = {y.max()}"


# ---------------------------------------------------------------------------------------------------------
# 2. Kernel fuzzing: degenerate geometries and poses, the FFI kernels against the pure-JAX reference
#
# Shapes are fixed across examples (F_ENVS envs over 2 geometries of F_WALLS walls and F_LIGHTS lights, F_AGENTS
# agents each, F_RES rays; texels padded to 2^19) so that the reference compiles once. JAXSTEP_FUZZ_EXAMPLES sets
# the number of examples (default 40, about 7 s on 2 CPU cores).

F_ENVS, F_AGENTS, F_WALLS, F_LIGHTS, F_RES = 4, 3, 10, 2, 24
WALL_KINDS = ("random", "tiny", "huge", "collinear", "overlapping", "duplicate", "chained", "tee", "crossing", "axis")
AGENT_KINDS = ("random", "on_endpoint", "on_wall", "touching_wall", "on_agent", "touching_agent", "far")
SPEED_KINDS = ("zero", "normal", "huge", "tiny", "at_endpoint")


def _fuzz_walls(kinds, rng: np.random.Generator) -> np.ndarray:
    """(len(kinds), 2, 2) walls; each kind says how a wall relates to the one before it."""
    walls = []
    for kind in kinds:
        angle = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        prev = walls[-1] if walls else np.array([[0.0, 0.0], [1.0, 0.5]])
        along = prev[1] - prev[0]
        if kind == "random":
            a = rng.uniform(-4, 4, 2)
            wall = [a, a + d * rng.uniform(0.2, 4)]
        elif kind == "tiny":
            a = rng.uniform(-3, 3, 2)
            wall = [a, a + d * 1e-3]
        elif kind == "huge":
            c = rng.uniform(-3, 3, 2)
            wall = [c - d * 500, c + d * 500]
        elif kind == "collinear":  # on the previous wall's line, disjoint from it
            start = prev[1] + along / np.linalg.norm(along) * rng.uniform(0.1, 1)
            wall = [start, start + along / np.linalg.norm(along) * rng.uniform(0.2, 3)]
        elif kind == "overlapping":  # on the previous wall's line, sharing part of it
            start = prev[0] + along * 0.25
            wall = [start, start + along / np.linalg.norm(along) * rng.uniform(0.2, 3)]
        elif kind == "duplicate":
            wall = [prev[0], prev[1]] if rng.random() < 0.5 else [prev[1], prev[0]]
        elif kind == "chained":  # starts where the previous one ends
            wall = [prev[1], prev[1] + d * rng.uniform(0.2, 3)]
        elif kind == "tee":  # starts on the previous one's middle
            mid = (prev[0] + prev[1]) / 2
            wall = [mid, mid + d * rng.uniform(0.2, 3)]
        elif kind == "crossing":
            mid = (prev[0] + prev[1]) / 2
            wall = [mid - d, mid + d]
        else:  # axis-aligned, on round numbers
            a = rng.integers(-4, 5, 2).astype(float)
            wall = [a, a + [rng.integers(1, 4), 0] if rng.random() < 0.5 else a + [0, rng.integers(1, 4)]]
        walls.append(np.asarray(wall, np.float64))
    walls = np.stack(walls)
    # the scenery rejects zero-length walls (float32 can round a tiny wall far out to nothing): nudge those
    zero = (walls[:, 0].astype(np.float32) == walls[:, 1].astype(np.float32)).all(-1)
    walls[zero, 1] += 1e-2
    return walls


def _fuzz_agents(kinds, speeds, walls: np.ndarray, rng: np.random.Generator):
    """positions, velocity (F_AGENTS, 2) of one env's agents, each placed and driven as its kind says."""
    positions, velocity = np.zeros((F_AGENTS, 2)), np.zeros((F_AGENTS, 2))
    for i, kind in enumerate(kinds):
        w = walls[rng.integers(len(walls))]
        angle = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        if kind == "random":
            p = rng.uniform(-4, 4, 2)
        elif kind == "on_endpoint":
            p = w[rng.integers(2)]
        elif kind == "on_wall":
            t = rng.choice([0.5, rng.uniform()])
            p = w[0] + t * (w[1] - w[0])
        elif kind == "touching_wall":
            n = (w[1] - w[0])[::-1] * [-1, 1] / np.linalg.norm(w[1] - w[0])
            p = w[0] + rng.uniform() * (w[1] - w[0]) + n * R * rng.choice([1.0, 1.001, 1.0011, 0.999])
        elif kind == "on_agent":
            p = positions[i - 1] if i else w[0]
        elif kind == "touching_agent":
            p = (positions[i - 1] if i else w[0]) + d * 2 * R * rng.choice([1.0, 1.001, 1.002, 0.999])
        else:
            p = rng.uniform(-4, 4, 2) + d * 1e3
        positions[i] = p
        speed = speeds[i]
        if speed == "normal":
            velocity[i] = rng.normal(size=2) * 10
        elif speed == "huge":
            velocity[i] = d * 10 ** rng.uniform(3, 5)
        elif speed == "tiny":
            velocity[i] = d * 1e-5
        elif speed == "at_endpoint":  # aimed exactly at a wall's endpoint, to arrive in 0.5-2 steps
            velocity[i] = (w[rng.integers(2)] - p) * FPS * rng.choice([0.5, 1.0, 2.0])
    return positions, velocity


def _pad_texels(s: scene.Scenery) -> scene.Scenery:
    """s with texels and baked padded to 2^19 (nothing indexes the padding) so that every example shares one
    compilation of the reference; 20 walls of 1 km have 400k texels."""
    n = s.texels.shape[0]
    size = max(1 << 19, 1 << (n - 1).bit_length())
    texels, baked = jnp.pad(s.texels, ((0, size - n), (0, 0))), jnp.pad(s.baked, (0, size - n))
    return dataclasses.replace(s, texels=texels, baked=baked)


def _check_render_outputs(out: core.Render, n_lines: int) -> None:
    indices, distances = np.asarray(out.indices), np.asarray(out.distances)
    for name in ("locations", "dots", "screen"):
        x = np.asarray(getattr(out, name))
        assert np.isfinite(x).all(), f"render.{name} holds NaN or inf"
    assert ((indices >= -1) & (indices < n_lines)).all()
    miss = indices == -1
    assert np.isinf(distances[miss]).all() and (distances[miss] > 0).all(), "misses are at +inf"
    assert np.isfinite(distances[~miss]).all(), "render.distances of a hit is NaN or inf"
    assert (distances[~miss] > 0).all()
    assert ((np.asarray(out.locations) >= 0) & (np.asarray(out.locations) <= 1)).all()
    # up to rounding: see test_grazing_hits_on_long_walls_keep_the_screen_in_range
    assert (np.abs(np.asarray(out.dots)) <= 1 + 1e-6).all(), "render.dots outside [-1, 1]"
    screen = np.asarray(out.screen)
    assert ((screen >= -1e-6) & (screen <= 1)).all(), "render.screen outside [0, 1]"


def _check_physics_outputs(out) -> None:
    agents, progress = out
    for name in ("angles", "positions", "velocity", "angvelocity"):
        assert np.isfinite(np.asarray(getattr(agents, name))).all(), f"physics: agents.{name} holds NaN or inf"
    progress = np.asarray(progress)
    assert np.isfinite(progress).all() and ((progress >= 0) & (progress <= 1)).all()
    angles = np.asarray(agents.angles)
    assert ((angles >= -180) & (angles < 180)).all()


@st.composite
def fuzz_cases(draw):
    walls = [draw(st.lists(st.sampled_from(WALL_KINDS), min_size=F_WALLS, max_size=F_WALLS)) for _ in range(2)]
    agents = [draw(st.lists(st.sampled_from(AGENT_KINDS), min_size=F_AGENTS, max_size=F_AGENTS))
              for _ in range(F_ENVS)]  # fmt: skip
    speeds = [draw(st.lists(st.sampled_from(SPEED_KINDS), min_size=F_AGENTS, max_size=F_AGENTS))
              for _ in range(F_ENVS)]  # fmt: skip
    angles = draw(st.sampled_from(["random", "round"]))
    return walls, agents, speeds, angles, draw(st.integers(0, 2**32 - 1))


def _fuzz_inputs(case):
    wall_kinds, agent_kinds, speed_kinds, angle_kind, seed = case
    rng = np.random.default_rng(seed)
    geometries = [dict(walls=_fuzz_walls(k, rng), lights=rng.uniform(-4, 4, (F_LIGHTS, 2))) for k in wall_kinds]
    positions, velocity = np.zeros((F_ENVS, F_AGENTS, 2)), np.zeros((F_ENVS, F_AGENTS, 2))
    for e in range(F_ENVS):
        positions[e], velocity[e] = _fuzz_agents(agent_kinds[e], speed_kinds[e], geometries[e % 2]["walls"], rng)
    if angle_kind == "round":
        angles = rng.choice([-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0], (F_ENVS, F_AGENTS))
    else:
        angles = rng.uniform(-180, 180, (F_ENVS, F_AGENTS))
    s = _pad_texels(scene.scenery([geometries[e % 2] for e in range(F_ENVS)], n_agents=F_AGENTS, seed=seed % 1000))
    agents = core.Agents(
        angles=jnp.asarray(angles, jnp.float32),
        positions=jnp.asarray(positions, jnp.float32),
        velocity=jnp.asarray(velocity, jnp.float32),
        angvelocity=jnp.asarray(rng.normal(size=(F_ENVS, F_AGENTS)) * 100, jnp.float32),
    )
    return geometries, s, agents


# more examples for a longer hunt: JAXSTEP_FUZZ_EXAMPLES=1000 python -m pytest tests/test_reliability.py -k fuzz
FUZZ = settings(max_examples=int(os.environ.get("JAXSTEP_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _line_lengths(s: scene.Scenery) -> np.ndarray:
    """(n_envs, n_lines) length of each line in each env's line order (agents' model lines, then walls)."""
    model = np.linalg.norm(reference.MODEL[:, 1] - reference.MODEL[:, 0], axis=-1)
    walls = np.linalg.norm(np.asarray(s.walls)[:, 1] - np.asarray(s.walls)[:, 0], axis=-1)
    offsets = np.asarray(s.wall_offsets)
    return np.stack([np.concatenate([np.tile(model, s.n_agents), walls[offsets[g] : offsets[g + 1]]])
                     for g in np.asarray(s.env_geometry)])  # fmt: skip


def _patch_rounding(s: scene.Scenery, agents, ffi: core.Render, ref: core.Render, atol: float) -> core.Render:
    """`ref` with ffi's answer on the rays where the two differ for a reason of float32 rounding alone. Where a ray
    meets a line depends on rounding by about `slack`: 1e-5 m, plus 1e-6 of the size of the env's coordinates over
    the sine of the angle between ray and line (a ray grazing a 1 km wall meets it within centimetres, or metres).

    - they pick different lines at a tie (coincident or overlapping lines, junctions: both hit at the same distance),
      a graze (the nearer hit is within 1e-3 of a line's end) or the near plane (the nearer hit is within 1e-4 m plus
      its slack of R, where lines start to count, so the other may have put it behind);
    - they hit the same line at points no further apart than its slack (along a 1 mm wall, 1e-5 m is a location of
      1e-2).

    Rays that assert_renders_close(..., atol) accepts as they are are left alone; any other disagreement is left for
    it to report."""
    fi, ri = np.asarray(ffi.indices), np.asarray(ref.indices)
    fd, rd = np.asarray(ffi.distances), np.asarray(ref.distances)
    fl, rl = np.asarray(ffi.locations), np.asarray(ref.locations)
    walls, offsets = np.asarray(s.walls), np.asarray(s.wall_offsets)
    size = np.array([max(1.0, np.abs(walls[offsets[g] : offsets[g + 1]]).max(), np.abs(agents.positions[e]).max())
                     for e, g in enumerate(np.asarray(s.env_geometry))])  # fmt: skip

    def slack(dots):
        sine = np.sqrt(np.clip(1 - np.asarray(dots, np.float64) ** 2, 1e-12, 1))
        return 1e-5 + 1e-6 * size[:, None, None] / sine

    ffi_nearer = fd < rd
    differ = fi != ri
    with np.errstate(invalid="ignore"):
        tie = (fi >= 0) & (ri >= 0) & (np.abs(fd - rd) <= 1e-3 * np.maximum(1, np.minimum(fd, rd)))
        nearer_location = np.where(ffi_nearer, fl, rl)
        graze = np.minimum(nearer_location, 1 - nearer_location) <= 1e-3
        nearer_slack = np.where(ffi_nearer, slack(ffi.dots), slack(ref.dots))
        near_plane = np.abs(np.minimum(fd, rd) - R) <= 1e-4 + nearer_slack
    switched = differ & (tie | graze | near_plane)

    length = np.take_along_axis(_line_lengths(s)[:, None, :], np.maximum(fi, 0).reshape(fi.shape[0], 1, -1), 2)
    with np.errstate(invalid="ignore"):
        same_point = (np.abs(fd - rd) <= slack(ffi.dots)) & (
            np.abs(fl - rl) * length.reshape(fi.shape) <= slack(ffi.dots)
        )
        close = (np.abs(fd - rd) <= atol + 1e-4 * np.abs(rd)) & (np.abs(fl - rl) <= atol)
    rounded = ~differ & (fi >= 0) & same_point & ~close
    patch = switched | rounded
    return core.Render(*(np.where(patch.reshape(patch.shape + (1,) * (np.ndim(f) - patch.ndim)), f, r)
                         for f, r in zip(ffi, ref, strict=True)))  # fmt: skip


def _compare_render(geometries, s, agents) -> None:
    ffi = core.render(s, agents, res=F_RES)
    ref = core.render(s, agents, res=F_RES, backend="reference")
    n_lines = F_AGENTS * MODEL_LINES + F_WALLS
    _check_render_outputs(ffi, n_lines)
    _check_render_outputs(ref, n_lines)
    # a 1 km wall has 20000 texels: a location that is 1 ulp off moves the texture filter by 1e-3 texels
    longest = max(np.linalg.norm(g["walls"][:, 1] - g["walls"][:, 0], axis=-1).max() for g in geometries)
    atol = max(1e-4, 3e-6 * longest)
    assert_renders_close(ffi, _patch_rounding(s, agents, ffi, ref, atol), atol=atol)


def _aimed_at_an_endpoint(geometries, agents) -> tuple[np.ndarray, np.ndarray]:
    """(aimed, touch), each (n_envs, n_agents): whether the agent's path passes through a wall's endpoint (up to
    float32 rounding of the path), and the kernels' fraction ("sensibilized") at which its disc first touches such
    an endpoint, in float64. Whether such a path crosses the wall strictly inside its ends is a toss-up of rounding:
    one backend may stop it by the "passing through" test and the other by the endpoint's, a little later."""
    r = 1.001 * R
    aimed = np.zeros((F_ENVS, F_AGENTS), bool)
    touch = np.ones((F_ENVS, F_AGENTS))
    for e in range(F_ENVS):
        ends = geometries[e % 2]["walls"].reshape(-1, 2)
        for i in range(F_AGENTS):
            p = np.float64(agents.positions[e, i])
            move = np.float64(agents.velocity[e, i] * np.float32(1 / np.float32(FPS)))
            length = np.linalg.norm(move)
            if length == 0:
                continue
            q = ends - p
            s = q @ move / length**2
            d = np.abs(q[:, 0] * move[1] - q[:, 1] * move[0]) / length
            hit = (d < 1e-6 * (np.abs(p).max() + length) + 1e-6) & (s > 0)
            if hit.any():
                aimed[e, i] = True
                touch[e, i] = min(1.0, 0.99 * (s[hit] - np.sqrt(r * r - d[hit] ** 2) / length).min())
    return aimed, touch


def _decided_by_rounding(geometries, agents, ffi_progress, ref_progress, atol) -> np.ndarray:
    """(n_envs, n_agents) bool: agents whose ffi and reference progress differ for a reason of rounding alone.

    The kernels branch on exact comparisons (does the path cross the wall strictly inside its ends? is a cross
    product that is 0 in exact arithmetic positive?), so g++ and XLA, which fuse multiply-adds differently, can take
    different branches on degenerate input:

    - an agent on a wall (up to float32 rounding of its placement): whether it moves off the wall or into it is a
      toss-up, and it overlaps the wall either way;
    - a path through a wall's endpoint: counted when both answers stop the agent before its disc touches that
      endpoint (see _aimed_at_an_endpoint);
    - an agent at rest (a move under 1e-5 m) within 1.01 R of a wall: the test for "ending within r of the wall's
      middle" divides 0 by 0 (see test_an_agent_at_rest_beside_a_wall_can_turn);

    and, since the kernels settle agents' progress against each other (`_settle` in the reference; see
    docs/reliability.md):

    - an agent moving under 1e-5 m within 1.01 * 2R of another: whether it is held ("it would end closer to the
      other than it started") compares distances that differ by rounding;
    - an agent whose progress differs in an env where another agent is in one of the cases above: where that one
      stops decides where this one is cut short or held.

    Anything else is a real disagreement."""
    ffi_progress, ref_progress = np.asarray(ffi_progress), np.asarray(ref_progress)
    differ = np.abs(ffi_progress - ref_progress) > atol
    positions = np.asarray(agents.positions, np.float64)
    distance = np.stack([_np_wall_distance(positions[e], geometries[e % 2]["walls"]) for e in range(F_ENVS)])
    on_wall = distance < 1e-5 * np.maximum(1, np.abs(positions).max(-1))
    aimed, touch = _aimed_at_an_endpoint(geometries, agents)
    stopped_before = aimed & (ffi_progress <= touch + atol) & (ref_progress <= touch + atol)
    still = np.linalg.norm(np.asarray(agents.velocity), axis=-1) / FPS < 1e-5
    at_rest = still & (distance < 1.01 * R)
    if not hasattr(reference, "_settle"):
        return differ & (on_wall | stopped_before | at_rest)
    pairs = np.linalg.norm(positions[:, :, None] - positions[:, None], axis=-1) + np.eye(F_AGENTS) * 1e9
    at_rest |= still & (pairs.min(-1) < 1.01 * 2 * R)
    tossed = differ & (on_wall | stopped_before | at_rest)
    # settling passes a difference on, round by round, from any agent that is a case above
    uncertain = on_wall | aimed | at_rest
    for _ in range(F_AGENTS):
        uncertain |= differ & ((uncertain.sum(-1, keepdims=True) - uncertain) > 0)
    return tossed | (differ & uncertain)


def _compare_physics(geometries, s, agents) -> None:
    ffi = core.physics(s, agents, fps=FPS)
    ref = core.physics(s, agents, fps=FPS, backend="reference")
    _check_physics_outputs(ffi)
    _check_physics_outputs(ref)
    ambiguous = _decided_by_rounding(geometries, agents, ffi[1], ref[1], atol=1e-4)
    # A stop point is found to about 1e-6 of the coordinates' size (more where the kernels cancel), so progress to
    # that over the move's length: 2e-4 for an agent 370 m out moving 0.6 m. Sub-rounding moves are left to the above.
    size = np.array([max(1.0, np.abs(g["walls"]).max()) for g in (geometries[e % 2] for e in range(F_ENVS))])
    size = np.maximum(size[:, None], np.abs(np.asarray(agents.positions)).max(-1))
    move = np.linalg.norm(np.asarray(agents.velocity), axis=-1) / FPS
    rounding = (move >= 1e-5) & (
        np.abs(np.asarray(ffi[1]) - np.asarray(ref[1])) <= 1e-4 + 1e-5 * size / np.maximum(move, 1e-5)
    )
    ambiguous |= rounding

    def patched(x, y):
        return np.where(ambiguous.reshape(ambiguous.shape + (1,) * (np.ndim(x) - 2)), x, y)

    ref = (jax.tree.map(patched, ffi[0], ref[0]), patched(ffi[1], ref[1]))
    np.testing.assert_allclose(ffi[1], ref[1], atol=1e-4, err_msg="physics: progress, ffi against reference")
    # positions far out (1 km) or moved far (up to 10 km a step) agree as well as progress does, relative to those
    scale = max(1.0, float(np.abs(np.asarray(ffi[0].positions)).max()), float(move.max()))
    assert_physics_close(ffi, ref, atol=1e-4 * scale)


def _compare_bake(geometries, s, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # points on walls (texel centres are), on endpoints, on lights, and anywhere
    walls = np.concatenate([g["walls"] for g in geometries])
    t = rng.choice([0.0, 0.5, 1.0, rng.uniform()], (64, 1))
    w = walls[rng.integers(len(walls), size=64)]
    lights = np.concatenate([g["lights"] for g in geometries])
    points = np.concatenate([w[:, 0] + t * (w[:, 1] - w[:, 0]), lights, rng.uniform(-5, 5, (64 - len(lights), 2))])
    geometry_of = np.arange(len(points)) % 2
    point_geometry = jnp.asarray(geometry_of, jnp.int32)
    ffi = calls.bake(jnp.asarray(points, jnp.float32), point_geometry, s.walls, s.wall_offsets, s.lights,
                     s.light_offsets)  # fmt: skip
    ref = reference.bake(dataclasses.replace(s, env_geometry=point_geometry), jnp.asarray(points, jnp.float32),
                         point_geometry)  # fmt: skip
    ffi, ref = np.asarray(ffi), np.asarray(ref)
    assert np.isfinite(ffi).all() and ((ffi >= 0.1 - 1e-6) & (ffi <= 1)).all(), "bake: light outside [0.1, 1]"
    assert np.isfinite(ref).all() and ((ref >= 0.1 - 1e-6) & (ref <= 1)).all(), "bake: light outside [0.1, 1]"
    # A point on a wall is lit unless a wall crosses the ray to the light before 0.999 of the way; with walls that
    # are collinear up to float32 rounding (overlapping runs, far out), that is a toss-up. Such a point may differ by
    # one light's contribution (less where the light is clamped at 1).
    diff = np.abs(ffi - ref)
    on_wall = np.stack([_np_wall_distance(p[None], g["walls"])[0] for p, g in
                        zip(points, (geometries[i] for i in geometry_of), strict=True)])  # fmt: skip
    on_wall = on_wall < 1e-3 * np.maximum(1, np.abs(points).max(-1))
    own = [np.asarray(g["lights"]) for g in geometries]
    intensity = [np.asarray(s.lights)[np.asarray(s.light_offsets)[i] : np.asarray(s.light_offsets)[i + 1], 2]
                 for i in range(2)]  # fmt: skip
    gain = np.stack([2 * intensity[i] / np.maximum(((own[i] - p) ** 2).sum(-1), 1) for p, i in
                     zip(points, geometry_of, strict=True)])  # fmt: skip
    clamped = (np.maximum(ffi, ref) >= 1 - 1e-6)[:, None]
    one_light = ((diff[:, None] <= gain + 1e-5) & ((diff[:, None] >= gain - 1e-5) | clamped)).any(-1)
    tossed = (diff > 1e-5) & on_wall & one_light
    np.testing.assert_allclose(ffi[~tossed], ref[~tossed], atol=1e-5, err_msg="bake: ffi against reference")


@FUZZ
@given(case=fuzz_cases())
def test_fuzzed_kernels_match_reference_and_give_no_nan(case):
    geometries, s, agents = _fuzz_inputs(case)
    _compare_render(geometries, s, agents)
    _compare_physics(geometries, s, agents)
    _compare_bake(geometries, s, seed=case[-1])


@pytest.mark.parametrize("backend", ["ffi", "reference"])
@pytest.mark.parametrize("gap", [1.0005 * R, 0.95 * R], ids=["clear-of-the-wall", "overlapping-the-wall"])
def test_an_agent_at_rest_beside_a_wall_can_turn(backend, gap):
    s = scene.scenery([_one_wall([[[0.0, 0.0], [0.0, 2.0]]])])
    # `gap` from the wall (spawned touching it, or left overlapping it by a graze past its end), turning at 90 deg/s
    agents = dataclasses.replace(core.agents(1, 1, positions=np.asarray([[[gap, 1.0]]], np.float32)),
                                 angvelocity=jnp.full((1, 1), 90.0))  # fmt: skip
    moved, progress = core.physics(s, agents, FPS, backend)
    assert float(progress[0, 0]) == 1.0, f"an agent at rest was stopped short (progress {float(progress[0, 0])})"
    np.testing.assert_allclose(moved.angles, [[9.0]], atol=1e-5, err_msg="the turn was cancelled")


@pytest.mark.parametrize("backend", ["ffi", "reference"])
def test_grazing_hits_on_long_walls_keep_the_screen_in_range(backend):
    # a 1 km wall at 37 degrees through the origin; 2048 agents 5-200 mm from it, each looking along it at a point
    # of the wall 50-450 m away. About 1% of these rays hit with |dot| rounded above 1.
    rng = np.random.default_rng(0)
    n, theta = 2048, np.radians(37.0)
    along, normal = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
    offset, distance = rng.uniform(0.005, 0.2, n), rng.uniform(50, 450, n)
    s = scene.scenery([dict(walls=np.array([[-500 * along, 500 * along]]), lights=np.array([[0.0, 1.0]]))] * n)
    agents = core.agents(
        n, 1, positions=(offset[:, None] * normal)[:, None], angles=np.degrees(theta - offset / distance)[:, None]
    )
    out = core.render(s, agents, res=1, backend=backend)
    assert (np.asarray(out.indices) == MODEL_LINES).all(), "every ray hits the wall"
    dots, screen = np.asarray(out.dots), np.asarray(out.screen)
    assert (np.abs(dots) <= 1).all(), (
        f"{(np.abs(dots) > 1).sum()} of {n} rays have |dot| > 1, up to {np.abs(dots).max()!r}"
    )
    assert (screen >= 0).all(), f"{(screen.min(-1) < 0).sum()} of {n} pixels are negative, down to {screen.min()!r}"


# ---------------------------------------------------------------------------------------------------------
# 3. Bad input: a ValueError or TypeError naming the argument, never a crash or a hang


@pytest.fixture(scope="module")
def two_by_two():
    """Scenery of 2 box envs with 2 agents each, and agents at rest inside."""
    s = scene.scenery([toys.box()] * 2, n_agents=2)
    return s, core.agents(2, 2, positions=np.asarray([[[2.0, 2.0], [4.0, 4.0]]] * 2, np.float32))


def _with(agents, **fields):
    return dataclasses.replace(agents, **fields)


BAD_AGENTS = [
    # (field, value, exception, match)
    ("positions", np.zeros((2, 2, 3)), ValueError, r"agents\.positions.*\(2, 2, 2\)"),
    ("positions", np.zeros((2, 2)), ValueError, r"agents\.positions"),
    ("positions", np.zeros((3, 2, 2)), ValueError, r"agents\.positions"),
    ("positions", 3.0, ValueError, r"agents\.positions"),
    ("angles", np.zeros((2, 3)), ValueError, r"agents\.angles"),
    ("angles", np.zeros((2, 2, 1)), ValueError, r"agents\.angles"),
    ("velocity", np.zeros((2, 2)), ValueError, r"agents\.velocity"),
    ("angvelocity", np.zeros(4), ValueError, r"agents\.angvelocity"),
    ("positions", np.zeros((2, 2, 2), bool), TypeError, r"agents\.positions.*bool"),
    ("angles", np.zeros((2, 2), np.complex64), TypeError, r"agents\.angles.*complex"),
    ("velocity", np.full((2, 2, 2), "1"), TypeError, r"agents\.velocity"),
    pytest.param("positions", None, (ValueError, TypeError), r"agents\.positions"),
    pytest.param("positions", [[["a", 1.0]] * 2] * 2, (ValueError, TypeError), r"agents\.positions"),
]  # fmt: skip


@pytest.mark.parametrize("kernel", ["render", "physics"])
@pytest.mark.parametrize("field, value, error, match", BAD_AGENTS)
def test_kernels_reject_agents_of_the_wrong_shape_or_dtype(two_by_two, kernel, field, value, error, match):
    s, agents = two_by_two
    with pytest.raises(error, match=match):
        getattr(core, kernel)(s, _with(agents, **{field: value}))


@pytest.mark.parametrize("kernel", ["render", "physics"])
def test_kernels_reject_what_is_not_scenery_or_agents(two_by_two, kernel):
    s, agents = two_by_two
    with pytest.raises(TypeError, match="agents"):
        getattr(core, kernel)(s, (agents.angles, agents.positions))
    with pytest.raises(TypeError, match="scenery"):
        getattr(core, kernel)(dict(walls=np.zeros((1, 2, 2))), agents)
    with pytest.raises(ValueError, match="backend"):
        getattr(core, kernel)(s, agents, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        getattr(core, kernel)(s, agents, backend=None)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(fov=180), ValueError, "fov"), (dict(fov=200.0), ValueError, "fov"), (dict(fov=0), ValueError, "fov"),
    (dict(fov=-5), ValueError, "fov"), (dict(fov=float("nan")), ValueError, "fov"),
    (dict(fov=float("inf")), ValueError, "fov"), (dict(fov="90"), ValueError, "fov"),
    (dict(fov=None), ValueError, "fov"),
    (dict(res=0), ValueError, "res"), (dict(res=-1), ValueError, "res"), (dict(res=2.5), ValueError, "res"),
    (dict(res="64"), ValueError, "res"), (dict(res=1 << 17), ValueError, "res"), (dict(res=None), ValueError, "res"),
])  # fmt: skip
def test_render_rejects_bad_fov_and_res(two_by_two, kwargs, error, match):
    with pytest.raises(error, match=match):
        core.render(*two_by_two, **kwargs)


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), float("inf"), "10", None])
def test_physics_rejects_bad_fps(two_by_two, fps):
    with pytest.raises(ValueError, match="fps"):
        core.physics(*two_by_two, fps=fps)


def test_traced_fov_res_and_fps_are_refused_by_name(two_by_two):
    s, agents = two_by_two
    with pytest.raises(TypeError, match="fps"):
        jax.jit(lambda fps: core.physics(s, agents, fps=fps))(10.0)
    with pytest.raises(TypeError, match="fov"):
        jax.jit(lambda fov: core.render(s, agents, fov=fov))(90.0)
    with pytest.raises(ValueError, match="res"):
        jax.jit(lambda res: core.render(s, agents, res=res))(8)


@pytest.mark.parametrize("backend", ["ffi", "reference"])
def test_nan_and_inf_agents_are_contained(two_by_two, backend):
    """The rule for invalid traced values (see docs/reliability.md): a NaN or inf position, velocity or angle is not
    an error (it cannot be checked without a device sync); it poisons that agent alone. Its own view is all misses,
    nobody sees it or bumps into it, and physics carries the NaN on; every other agent is unaffected."""
    s, agents = two_by_two
    positions = np.asarray(agents.positions).copy()
    positions[0, 0] = np.nan
    positions[1, 0, 0] = np.inf
    bad = _with(agents, positions=jnp.asarray(positions), velocity=jnp.ones((2, 2, 2)),
                angles=jnp.asarray([[0.0, 225.0], [0.0, 225.0]]))  # fmt: skip
    render = jax.jit(lambda a: core.render(s, a, res=16, backend=backend))(bad)
    np.testing.assert_array_equal(render.indices[:, 0], -1)
    assert np.isinf(np.asarray(render.distances[:, 0])).all()
    np.testing.assert_array_equal(render.screen[:, 0], 0.0)
    for out in render:
        assert not np.isnan(np.asarray(out)).any(), "NaN in the render"
    # agent 1 looks straight at where agent 0 would be, and sees the wall behind it: the same as with agent 0 gone
    alone = core.render(s, _with(bad, positions=jnp.asarray(positions).at[:, 0].set(100.0)), res=16, backend=backend)
    np.testing.assert_array_equal(render.indices[:, 1], alone.indices[:, 1])

    moved, progress = jax.jit(lambda a: core.physics(s, a, FPS, backend))(bad)
    p = np.asarray(moved.positions)
    assert np.isnan(p[0, 0]).all() and not np.isfinite(p[1, 0]).all()
    np.testing.assert_allclose(p[:, 1], positions[:, 1] + 0.1, atol=1e-6)  # the others move freely
    assert np.isfinite(np.asarray(progress)).all()

    velocity = np.ones((2, 2, 2), np.float32)
    velocity[0, 1] = np.nan
    moved, progress = core.physics(s, _with(agents, velocity=jnp.asarray(velocity)), FPS, backend)
    p = np.asarray(moved.positions)
    assert np.isnan(p[0, 1]).all(), "a NaN velocity makes a NaN position"
    np.testing.assert_allclose(p[0, 0], np.asarray(agents.positions)[0, 0] + 0.1, atol=1e-6)
    np.testing.assert_allclose(p[1], np.asarray(agents.positions)[1] + 0.1, atol=1e-6)


BOX = toys.box()


@pytest.mark.parametrize("geometries, kwargs, error, match", [
    ([], {}, ValueError, "geometries.*empty"),
    (BOX, {}, ValueError, "geometries.*list"),
    ([None], {}, ValueError, r"geometries\[0\]"),
    ([dict(walls=BOX["walls"])], {}, ValueError, r"geometries\[0\].*lights"),
    ([dict(BOX, walls=np.full((1, 2, 2), np.nan))], {}, ValueError, r"geometries\[0\].*finite"),
    ([dict(BOX, walls=np.asarray([[[0.0, 0.0], [np.inf, 1.0]]]))], {}, ValueError, r"geometries\[0\].*finite"),
    ([dict(BOX, lights=[[np.nan, 1.0]])], {}, ValueError, r"geometries\[0\].*finite"),
    ([dict(BOX, walls=np.ones((1, 2, 2)))], {}, ValueError, r"geometries\[0\]\['walls'\].*zero-length"),
    ([BOX, dict(BOX, walls=np.asarray([[[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [3.0, 3.0]]]))], {}, ValueError,
     r"geometries\[1\]\['walls'\].*zero-length wall at index 1"),
    ([dict(BOX, walls=np.zeros((4, 2)))], {}, ValueError, r"geometries\[0\]\['walls'\].*\(W, 2, 2\)"),
    ([BOX], dict(n_agents=0), ValueError, "n_agents"),
    ([BOX], dict(n_agents=-1), ValueError, "n_agents"),
    ([BOX], dict(n_agents=1.5), ValueError, "n_agents"),
    ([BOX], dict(backend="cuda"), ValueError, "backend"),
    pytest.param(None, {}, (ValueError, TypeError), "geometries"),
    pytest.param([dict(BOX, walls=[[["a", 1.0], [2.0, 3.0]]])], {}, ValueError, r"geometries\[0\]"),
    pytest.param([dict(BOX, lights=np.ones(3))], {}, ValueError, r"geometries\[0\].*lights"),
    pytest.param([dict(BOX, lights=np.ones((2, 3)))], {}, ValueError, r"geometries\[0\].*lights"),
])  # fmt: skip
def test_scenery_rejects_bad_geometries_by_name(geometries, kwargs, error, match):
    with pytest.raises(error, match=match):
        scene.scenery(geometries, **kwargs)


ALL_ENVS = sorted(envs.REGISTRY)


def _small(name: str) -> dict:
    """Config that keeps an env cheap to build: the box (not procedural plans) and a low deathmatch resolution."""
    config = {} if name == "minimal" else dict(geometries=[toys.box()])
    if name == "deathmatch":
        config.update(n_agents=2, res=16, subsample=2)
    return config


@pytest.mark.parametrize("name", ["nope", "Minimal", "", " minimal", None])
def test_make_rejects_unknown_env_names(name):
    with pytest.raises(ValueError, match="unknown env"):
        jaxstep.make(name)


@pytest.mark.parametrize("name", ALL_ENVS)
@pytest.mark.parametrize("config, error, match", [
    (dict(n_envs=0), ValueError, "n_envs"), (dict(n_envs=-2), ValueError, "n_envs"),
    (dict(n_envs=2.0), ValueError, "n_envs"), (dict(n_envs=True), ValueError, "n_envs"),
    (dict(n_envs=None), ValueError, "n_envs"), (dict(res=0), ValueError, "res"), (dict(res=-8), ValueError, "res"),
    (dict(res=8.0), ValueError, "res"), (dict(backend="cuda"), ValueError, "backend"),
    (dict(colour="red"), TypeError, "colour"),
])  # fmt: skip
def test_make_rejects_bad_config_by_name(name, config, error, match):
    with pytest.raises(error, match=match):
        jaxstep.make(name, **{**_small(name), **config})


@pytest.mark.parametrize("name", ["explorer", "waypoint", "deathmatch"])
@pytest.mark.parametrize("geometries, match", [
    ([], "geometries"), ([dict(walls=np.zeros((1, 2, 2)))], "missing key"),
    ([dict(BOX, walls=np.full((4, 2, 2), np.nan))], "NaN"), ([dict(BOX, res=-0.2)], "res"),
])  # fmt: skip
def test_make_rejects_bad_geometries(name, geometries, match):
    with pytest.raises(ValueError, match=match):
        jaxstep.make(name, **{**_small(name), "geometries": geometries})


@pytest.mark.parametrize("config, match", [
    (dict(n_agents=0), "n_agents"), (dict(n_agents=65), "n_agents"), (dict(n_agents=-1), "n_agents"),
    (dict(subsample=0), "subsample"), (dict(subsample=3), "subsample"), (dict(subsample=16), "subsample"),
    (dict(subsample=-2), "subsample"), (dict(res=6, subsample=4), "subsample"),
])  # fmt: skip
def test_make_deathmatch_rejects_bad_agents_and_subsample(config, match):
    with pytest.raises(ValueError, match=match):
        jaxstep.make("deathmatch", **{**_small("deathmatch"), **config})


@pytest.mark.parametrize("name", ALL_ENVS)
@pytest.mark.parametrize("config, match", [
    (dict(fov=180), "fov"), (dict(fov=0), "fov"), (dict(fps=-10.0), "fps"),
    pytest.param(dict(fps=0), "fps"),
])  # fmt: skip
def test_bad_fov_and_fps_are_refused_by_the_first_step(name, config, match):
    """make refuses bad fov and fps by name (the kernels would, at the latest when reset or step is first traced)."""
    with pytest.raises(ValueError, match=match):
        env = jaxstep.make(name, **{**_small(name), **config})
        state, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        jax.eval_shape(env.step, state, jnp.zeros((env.n_envs, env.n_agents), jnp.int32))


@pytest.mark.parametrize("name", ALL_ENVS)
@pytest.mark.parametrize("action, error, match", [
    (np.zeros((3,), np.int32), ValueError, r"action: expected shape"),
    (np.zeros((3, 1, 1), np.int32), ValueError, r"action: expected shape"),
    (np.zeros((1, 3), np.int32), ValueError, r"action: expected shape"),
    (np.int32(0), ValueError, r"action: expected shape"),
    (np.zeros((3, 1), np.float32), TypeError, r"action: expected integers"),
    (np.zeros((3, 1), bool), TypeError, r"action: expected integers"),
    (np.zeros((3, 1), np.complex64), TypeError, r"action: expected integers"),
    pytest.param(None, (ValueError, TypeError), "action"),
    pytest.param(np.full((3, 1), "3"), (ValueError, TypeError), "action"),
])  # fmt: skip
def test_step_rejects_actions_of_the_wrong_shape_or_dtype(name, action, error, match):
    env = jaxstep.make(name, n_envs=3, **_small(name))
    state, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0))  # a traced state: the checks need no data
    if isinstance(action, np.ndarray) and action.ndim == 2 and action.shape[1] == 1:
        action = np.repeat(action, env.n_agents, 1)  # the dtype is what is wrong here, not the shape
    with pytest.raises(error, match=match):
        env.step(state, action)  # eagerly: the action is checked before the state is touched


INVALID_ACTIONS = [-1, modules.N_ACTIONS, 100, np.iinfo(np.int32).min, np.iinfo(np.int32).max]


def _assert_trees_equal(a, b, what: str):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=what)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_out_of_range_actions_run_as_noops_and_are_flagged(name):
    """The rule for invalid traced actions: an action outside [0, N_ACTIONS) is not an error (under jit it cannot
    be); it runs as the noop (0) and ts.info["invalid_actions"] flags it. Checked under jit, valid ones mixed in."""
    env = jaxstep.make(name, n_envs=3, **_small(name))
    step = jax.jit(env.step)
    state, _ = jax.jit(env.reset)(jax.random.PRNGKey(0))
    forward = jnp.full((env.n_envs, env.n_agents), 3, jnp.int32)
    for _ in range(3):  # some motion, so that a noop is not a standstill
        state, _ = step(state, forward)
    rng = np.random.default_rng(0)
    shape = (env.n_envs, env.n_agents)
    valid = rng.integers(0, modules.N_ACTIONS, shape).astype(np.int32)
    invalid = rng.random(shape) < 0.5
    invalid[0, 0], invalid[1, 0] = True, False
    actions = np.where(invalid, rng.choice(INVALID_ACTIONS, shape), valid).astype(np.int32)
    stepped, ts = step(state, actions)
    as_noops, noop_ts = step(state, np.where(invalid, 0, valid).astype(np.int32))
    np.testing.assert_array_equal(ts.info["invalid_actions"], invalid)
    assert not np.asarray(noop_ts.info["invalid_actions"]).any()
    _assert_trees_equal(stepped, as_noops, f"{name}: invalid actions should step exactly as noops")
    _assert_trees_equal((ts.obs, ts.reward, ts.terminated, ts.truncated),
                        (noop_ts.obs, noop_ts.reward, noop_ts.terminated, noop_ts.truncated), name)  # fmt: skip


@pytest.fixture(scope="module")
def minimal_step():
    # not jitted: at a jit boundary JAX itself narrows int64 arrays to int32 (x64 is off), before step sees them
    env = jaxstep.make("minimal", n_envs=3)
    state, _ = env.reset(jax.random.PRNGKey(0))
    return env.step, state


@pytest.mark.parametrize("actions", [
    np.asarray([[255], [7], [3]], np.uint8), np.asarray([[-1], [7], [3]], np.int16),
    np.asarray([[-(2**31)], [2**31 - 1], [3]], np.int64),
    pytest.param(np.asarray([[2**32 + 3], [2**31], [3]], np.int64)),
    np.asarray([[2**32 - 1], [2**31], [3]], np.uint32), np.asarray([[2**64 - 1], [2**32 + 3], [3]], np.uint64),
], ids=["uint8", "int16", "int64", "int64-beyond-int32", "uint32", "uint64"])  # fmt: skip
def test_out_of_range_actions_of_other_integer_dtypes_are_flagged(minimal_step, actions):
    step, state = minimal_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JAX warns that it truncates int64 to int32
        _, ts = step(state, actions)
    np.testing.assert_array_equal(ts.info["invalid_actions"], [[True], [True], [False]], err_msg=str(actions))


@pytest.mark.parametrize("change, error, match", [
    (lambda g: g.pop("masks"), ValueError, r"missing key\(s\) \['masks'\]"),
    (lambda g: g.update(walls=[[["a", 1], [2, 3]]]), ValueError, r"geometry\['walls'\] could not be read"),
    (lambda g: g.update(walls=None), ValueError, r"geometry\['walls'\]"),
    (lambda g: g.update(walls=np.full((1, 2, 2), np.inf)), ValueError, r"geometry\['walls'\].*NaN or inf"),
    (lambda g: g.update(lights=np.ones((2, 3))), ValueError, r"geometry\['lights'\] has shape \(2, 3\)"),
    (lambda g: g.update(res=None), ValueError, r"geometry\['res'\]"),
    (lambda g: g.update(res=0), ValueError, r"geometry\['res'\]"),
    (lambda g: g.update(res=float("nan")), ValueError, r"geometry\['res'\]"),
    (lambda g: g.update(masks=g["masks"] > 0), ValueError, r"geometry\['masks'\].*bool"),
    (lambda g: g.update(masks=np.zeros((0, 0), int)), ValueError, r"geometry\['masks'\]"),
    (lambda g: g.update(masks=np.minimum(g["masks"], 0)), ValueError, r"geometry\['masks'\].*no free cells"),
    (lambda g: g.update(masks=g["masks"] - 5), ValueError, r"geometry\['masks'\].*>= -1"),
    (lambda g: g.update(walls=g["walls"] + 100), ValueError, r"geometry\['walls'\].*outside the mask's extent"),
])  # fmt: skip
def test_validate_names_the_bad_key(change, error, match):
    g = toys.box()
    change(g)
    with pytest.raises(error, match=match):
        geometry.validate(g)
    with pytest.raises(TypeError, match="must be a dict"):
        geometry.validate(None)


# ---------------------------------------------------------------------------------------------------------
# 4. Determinism: the same key, the same trajectory, bit for bit (on the CPU)


def _env_rollout(env, steps: int = 60):
    """A freshly traced and jitted rollout of random actions: key -> (first TimeStep, (last state, every TimeStep
    and the agents after every step))."""

    def step(state, key):
        state, ts = env.step(state, env.action_space.sample(key))
        return state, (ts, state.agents)

    def run(key):
        reset_key, step_key = jax.random.split(key)
        state, first = env.reset(reset_key)
        return first, jax.lax.scan(step, state, jax.random.split(step_key, steps))

    return jax.jit(run)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_same_key_gives_a_bit_identical_trajectory(name):
    rollout = _env_rollout(jaxstep.make(name, n_envs=4, **_small(name)))
    first, other = rollout(jax.random.PRNGKey(7)), rollout(jax.random.PRNGKey(8))
    _assert_trees_equal(first, rollout(jax.random.PRNGKey(7)), f"{name}: the same key twice, different trajectories")
    # a second env object with the same config, traced and compiled afresh
    again = _env_rollout(jaxstep.make(name, n_envs=4, **_small(name)))(jax.random.PRNGKey(7))
    _assert_trees_equal(first, again, f"{name}: a fresh env and compilation, same key, different trajectory")
    positions = lambda out: np.asarray(out[1][1][1].positions)  # noqa: E731
    assert not np.array_equal(positions(first), positions(other)), f"{name}: another key, the same trajectory"
