"""Reliability: no tunnelling over a million agent-steps, the FFI kernels against the reference on degenerate
input, clear errors for bad input at every public entry point, and bit-identical rollouts per key.

See docs/reliability.md for what is checked, the rules for invalid traced inputs and the measured numbers.
Tests marked xfail(strict=True) with a reason starting "BUG" document a bug found here: they fail (as expected)
until the bug is fixed, then XPASS, which fails the run so the marker gets removed.
"""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_checks import assert_physics_close, assert_renders_close

from jaxstep import core, geometry, modules, scene, toys
from jaxstep.ffi import calls, reference
from jaxstep.ffi.types import AGENT_RADIUS, MODEL_LINES

R = float(np.float32(AGENT_RADIUS))  # 0.106 m
FPS = 10.0


def bug(reason: str):
    """Marks a test (or a param) that fails because of a bug found by this file; see the module docstring."""
    return pytest.mark.xfail(strict=True, reason=f"BUG: {reason}")


# ---------------------------------------------------------------------------------------------------------
# 1. No tunnelling: random and adversarial driving in mazes and floor plans, checked after every step
#
# 16 mazes and 16 floor plans, 1024 envs of 4 agents: 4096 agents, STEPS steps each, driven by `_drive` inside one
# jitted lax.scan over core.physics (ffi backend). After every step, every agent's centre path (old -> new
# position) is tested against every wall of its env, and every pair of agents for overlap.

N_ENVS, N_AGENTS, STEPS = 1024, 4, 250
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
        moved, _ = core.physics(s, dataclasses.replace(agents, velocity=velocity, angvelocity=spin), FPS, backend)
        after = moved.positions
        nearest, wall_after = walls.nearest(after)
        pair_before, pair_after = _pair_distances(before), _pair_distances(after)
        flags = dict(
            wall_crossings=walls.crossed(before, after),
            agent_overlaps=((pair_after < 2 * R) & (pair_before >= 2 * R)).any(-1),
            deep_agent_overlaps=(pair_after < 0.98 * 2 * R).any(-1),
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
    print(f"\ntunnelling rollout: {result['agent_steps']} agent-steps in {result['seconds']:.1f} s (compile included); "
          f"counts {result['counts']}; closest approach to a wall {result['wall_min']:.4f} m, "
          f"between agents {result['pair_min']:.4f} m")
    return result


def _describe(run: dict, kind: str) -> str:
    return (f"{VIOLATIONS[kind]}: {run['counts'][kind]} times in {run['agent_steps']} agent-steps; "
            f"first: {run['examples'].get(kind)}")


def test_no_agent_centre_crosses_a_wall_in_a_million_driven_steps(tunnel_run):
    assert tunnel_run["agent_steps"] >= 1_000_000
    assert tunnel_run["counts"]["wall_crossings"] == 0, _describe(tunnel_run, "wall_crossings")


def test_positions_stay_finite_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["nonfinite"] == 0, _describe(tunnel_run, "nonfinite")
    assert tunnel_run["final_finite"]


@bug("agents overlap: the pairwise check assumes the other agent makes its whole move; when that one is stopped "
     "short (by a wall or a third agent) the mover runs into it. Same math as megastep's collision kernel.")
def test_agents_never_come_to_overlap_in_driven_steps(tunnel_run):
    assert tunnel_run["counts"]["agent_overlaps"] == 0, _describe(tunnel_run, "agent_overlaps")
    assert tunnel_run["counts"]["deep_agent_overlaps"] == 0, _describe(tunnel_run, "deep_agent_overlaps")


@bug("agent discs overlap walls: a move whose end lies beyond a wall's endpoint is only checked against the "
     "endpoint's circle, so the disc can pass (and stop) within R of the wall's middle. Same math as megastep.")
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
@bug("a follower runs into a leader stopped by a wall (agents' centres end 3 mm apart)")
def test_follower_stops_short_of_a_leader_stopped_by_a_wall(backend):
    s = scene.scenery([toys.box()], n_agents=2)  # the box's right wall is at x = 6
    after, _ = _move(s, [[[5.5, 3.5], [5.2, 3.5]]], [[[20.0, 0.0], [20.0, 0.0]]], backend)
    gap = np.linalg.norm(after[0, 0] - after[0, 1])
    assert gap >= 2 * R, f"centres {gap:.4f} m apart after the step, less than 2R = {2 * R:.4f}: {after.tolist()}"


@pytest.mark.parametrize("backend", ["ffi", "reference"])
@bug("an agent grazing past a wall's end stops 0.06 m from the wall's middle, its disc 4 cm into the wall")
def test_agent_grazing_past_a_wall_end_stops_short_of_the_wall(backend):
    s = scene.scenery([_one_wall([[[0.0, 0.0], [0.0, 2.0]]])])
    # 0.3 m from the wall, heading for a point just past its top end: (0.3, 0.3) -> (0, 2.3)
    after, progress = _move(s, [[[0.3, 0.3]]], [[[-3.0, 20.0]]], backend)
    x, y = after[0, 0]
    assert 0 < y < 2, "stopped beside the wall"
    assert x >= R, f"centre {x:.4f} m from the wall after the step (progress {progress[0, 0]:.3f}), less than R = {R:.4f}"


@pytest.mark.parametrize("backend", ["ffi", "reference"])
@pytest.mark.parametrize("gap, passes", [(2 * R * 0.99, False), (2 * R * 1.05, True)])
def test_doorways_narrower_than_an_agent_cannot_be_squeezed_through(backend, gap, passes):
    # two walls along y = 0 with a gap of `gap` around x = 0; the agent is driven at it from below for 50 steps
    walls = [[[-3.0, 0.0], [-gap / 2, 0.0]], [[gap / 2, 0.0], [3.0, 0.0]]]
    s = scene.scenery([_one_wall(walls)], n_agents=1)
    agents = core.agents(1, 1, positions=np.asarray([[[0.0, -1.0]]], np.float32))
    agents = dataclasses.replace(agents, velocity=jnp.asarray([[[0.0, 30.0]]], jnp.float32))

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
# agents each, F_RES rays; texels padded to a power of two) so that the reference compiles a handful of times.

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
    return dataclasses.replace(s, texels=jnp.pad(s.texels, ((0, size - n), (0, 0))), baked=jnp.pad(s.baked, (0, size - n)))


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
    assert (np.abs(np.asarray(out.dots)) <= 1 + 1e-5).all()
    screen = np.asarray(out.screen)
    assert ((screen >= 0) & (screen <= 1)).all()


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


def _patch_rounding(s: scene.Scenery, ffi: core.Render, ref: core.Render) -> core.Render:
    """`ref` with ffi's answer on the rays where the two differ for a reason of float32 rounding alone:

    - they pick different lines at a tie (coincident or overlapping lines, junctions: both hit at the same distance)
      or a graze (the nearer hit is within 1e-3 of a line's end);
    - they hit the same line at locations less than 1e-5 m apart along it (as a fraction of a 1 mm wall, 1e-2).

    Any other disagreement is left for assert_renders_close to report."""
    fi, ri = np.asarray(ffi.indices), np.asarray(ref.indices)
    fd, rd = np.asarray(ffi.distances), np.asarray(ref.distances)
    fl, rl = np.asarray(ffi.locations), np.asarray(ref.locations)
    differ = fi != ri
    with np.errstate(invalid="ignore"):
        tie = (fi >= 0) & (ri >= 0) & (np.abs(fd - rd) <= 1e-3 * np.maximum(1, np.minimum(fd, rd)))
    nearer_location = np.where(fd < rd, fl, rl)
    graze = np.minimum(nearer_location, 1 - nearer_location) <= 1e-3
    patch = differ & (tie | graze)
    length = np.take_along_axis(_line_lengths(s)[:, None, :], np.maximum(fi, 0).reshape(fi.shape[0], 1, -1), 2)
    close = ~differ & (fi >= 0) & (np.abs(fl - rl) * length.reshape(fi.shape) <= 1e-5)
    out = [np.where(patch.reshape(patch.shape + (1,) * (np.ndim(f) - patch.ndim)), f, r)
           for f, r in zip(ffi, ref, strict=True)]  # fmt: skip
    out[1] = np.where(close, fl, out[1])
    return core.Render(*out)


def _compare_render(geometries, s, agents) -> None:
    ffi = core.render(s, agents, res=F_RES)
    ref = core.render(s, agents, res=F_RES, backend="reference")
    n_lines = F_AGENTS * MODEL_LINES + F_WALLS
    _check_render_outputs(ffi, n_lines)
    _check_render_outputs(ref, n_lines)
    # a 1 km wall has 20000 texels: a location that is 1 ulp off moves the texture filter by 1e-3 texels
    longest = max(np.linalg.norm(g["walls"][:, 1] - g["walls"][:, 0], axis=-1).max() for g in geometries)
    assert_renders_close(ffi, _patch_rounding(s, ffi, ref), atol=max(1e-4, 3e-6 * longest))


NUDGES, NUDGE_ULPS = 16, 4


@jax.jit
def _nudged_reference_progress(s: scene.Scenery, agents: core.Agents, key) -> jax.Array:
    """(NUDGES, n_envs, n_agents) the reference's progress for copies of `agents` whose positions and velocities
    are each moved by up to NUDGE_ULPS float32 ulps: how far rounding alone can move the reference's answer."""

    def nudge(key, x):
        ulps = jax.random.randint(key, (NUDGES, *x.shape), -NUDGE_ULPS, NUDGE_ULPS + 1).astype(jnp.float32)
        return x + x * ulps * np.float32(2**-23)

    k1, k2 = jax.random.split(key)
    copies = dataclasses.replace(jax.tree.map(lambda x: jnp.broadcast_to(x, (NUDGES, *x.shape)), agents),
                                 positions=nudge(k1, agents.positions), velocity=nudge(k2, agents.velocity))  # fmt: skip
    return jax.vmap(lambda a: core.physics(s, a, FPS, "reference")[1])(copies)


def _decided_by_rounding(s, agents, ffi_progress, ref_progress, atol) -> np.ndarray:
    """(n_envs, n_agents) bool: agents whose ffi and reference progress differ, but where the ffi's answer is one the
    reference itself gives once the inputs are nudged by a few ulps. The kernels branch on exact comparisons (does
    the path cross the wall strictly inside its ends? is a cross product that is 0 in exact arithmetic positive?), so
    g++ and XLA (which fuse multiply-adds differently) can take different branches on degenerate input: an agent
    exactly on a wall or its endpoint, a path aimed exactly at an endpoint, an agent at rest beside a wall (see
    test_an_agent_at_rest_beside_a_wall_can_turn). Anything else is a real disagreement."""
    nudged = np.asarray(_nudged_reference_progress(s, agents, jax.random.PRNGKey(0)))
    ffi_progress, ref_progress = np.asarray(ffi_progress), np.asarray(ref_progress)
    differ = np.abs(ffi_progress - ref_progress) > atol
    within = (ffi_progress >= nudged.min(0) - atol) & (ffi_progress <= nudged.max(0) + atol)
    return differ & within


def _compare_physics(s, agents) -> None:
    ffi = core.physics(s, agents, fps=FPS)
    ref = core.physics(s, agents, fps=FPS, backend="reference")
    _check_physics_outputs(ffi)
    _check_physics_outputs(ref)
    ambiguous = _decided_by_rounding(s, agents, ffi[1], ref[1], atol=1e-4)

    def patched(x, y):
        return np.where(ambiguous.reshape(ambiguous.shape + (1,) * (np.ndim(x) - 2)), x, y)

    ref = (jax.tree.map(patched, ffi[0], ref[0]), patched(ffi[1], ref[1]))
    np.testing.assert_allclose(ffi[1], ref[1], atol=1e-4, err_msg="physics: progress, ffi against reference")
    # huge speeds carry agents ~10 km: compare positions to a few float32 ulps of their size
    scale = max(1.0, float(np.abs(np.asarray(ffi[0].positions)).max()))
    assert_physics_close(ffi, ref, atol=1e-4 * scale)


def _compare_bake(geometries, s, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # points on walls (texel centres are), on endpoints, on lights, and anywhere
    walls = np.concatenate([g["walls"] for g in geometries])
    t = rng.choice([0.0, 0.5, 1.0, rng.uniform()], (64, 1))
    w = walls[rng.integers(len(walls), size=64)]
    lights = np.concatenate([g["lights"] for g in geometries])
    points = np.concatenate([w[:, 0] + t * (w[:, 1] - w[:, 0]), lights, rng.uniform(-5, 5, (64 - len(lights), 2))])
    point_geometry = jnp.asarray(np.arange(len(points)) % 2, jnp.int32)
    points = jnp.asarray(points, jnp.float32)
    ffi = calls.bake(points, point_geometry, s.walls, s.wall_offsets, s.lights, s.light_offsets)
    ref = reference.bake(dataclasses.replace(s, env_geometry=point_geometry), points, point_geometry)
    ffi, ref = np.asarray(ffi), np.asarray(ref)
    assert np.isfinite(ffi).all() and ((ffi >= 0.1 - 1e-6) & (ffi <= 1)).all(), "bake: light outside [0.1, 1]"
    np.testing.assert_allclose(ffi, ref, atol=1e-5, err_msg="bake: ffi against reference")


@FUZZ
@given(case=fuzz_cases())
def test_fuzzed_kernels_match_reference_and_give_no_nan(case):
    geometries, s, agents = _fuzz_inputs(case)
    _compare_render(geometries, s, agents)
    _compare_physics(s, agents)
    _compare_bake(geometries, s, seed=case[-1])
