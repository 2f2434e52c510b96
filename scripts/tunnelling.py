"""Counts wall crossings and agent overlaps under random, fast movement (for docs/reliability.md).

    python scripts/tunnelling.py --n-envs 65536 --n-agents 4 --steps 400   # 1.05e8 agent-steps

Agents in procedural floor plans get a new random velocity (up to --speed m/s, often straight at a wall or each
other) every step; after each physics step, an agent whose centre path crossed a wall, or two agents closer
than 2 radii * 0.99, count as failures.
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core, geometry, modules, scene
from jaxstep.ffi.types import AGENT_RADIUS


def crossings(p0, p1, walls, valid):
    """(n, A) number of walls (n, W, 2, 2) that the segments p0 -> p1 (n, A, 2) properly cross."""
    a, b = walls[:, None, :, 0], walls[:, None, :, 1]
    p, q = p0[:, :, None], p1[:, :, None]

    def side(u, v, w):
        (ux, uy), (vx, vy), (wx, wy) = (u[..., 0], u[..., 1]), (v[..., 0], v[..., 1]), (w[..., 0], w[..., 1])
        return jnp.sign((vx - ux) * (wy - uy) - (vy - uy) * (wx - ux))

    hit = (side(a, b, p) * side(a, b, q) < 0) & (side(p, q, a) * side(p, q, b) < 0)
    return (hit & valid[:, None, :]).sum(-1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-envs", type=int, default=1024)
    parser.add_argument("--n-agents", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--speed", type=float, default=30.0)
    parser.add_argument("--out")
    args = parser.parse_args()

    plans = geometry.floorplans(64, seed=7)
    geometries = [plans[i % len(plans)] for i in range(args.n_envs)]
    s = scene.scenery(geometries, n_agents=args.n_agents)
    spawns = modules.random_spawns(plans, seed=7)
    agents = modules.respawn(core.agents(args.n_envs, args.n_agents), spawns, s.env_geometry,
                             jnp.ones((args.n_envs, args.n_agents), bool), jax.random.PRNGKey(0))  # fmt: skip
    W = s.max_walls
    index = np.asarray(s.wall_offsets)[np.asarray(s.env_geometry)][:, None] + np.arange(W)
    valid = np.arange(W)[None] < np.diff(np.asarray(s.wall_offsets))[np.asarray(s.env_geometry)][:, None]
    walls = jnp.asarray(np.asarray(s.walls)[np.minimum(index, len(s.walls) - 1)])
    valid = jnp.asarray(valid)

    @jax.jit
    def run(agents, key):
        def step(carry, key):
            agents, failures = carry
            speed = jax.random.uniform(key, agents.positions.shape[:2], maxval=args.speed)
            angle = jax.random.uniform(jax.random.fold_in(key, 1), agents.positions.shape[:2], maxval=2 * jnp.pi)
            velocity = jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1) * speed[..., None]
            before = agents.positions
            agents, progress = core.physics(s, dataclasses.replace(agents, velocity=velocity))
            crossed = crossings(before, agents.positions, walls, valid).sum()
            gaps = jnp.linalg.norm(agents.positions[:, :, None] - agents.positions[:, None], axis=-1)
            gaps = gaps + jnp.eye(args.n_agents) * 1e3
            # pairs that came closer than touching on this step (spawns may start a little inside each other)
            was = jnp.linalg.norm(before[:, :, None] - before[:, None], axis=-1) + jnp.eye(args.n_agents) * 1e3
            overlaps = ((gaps < 2 * AGENT_RADIUS * 0.99) & (gaps < was - 1e-6)).sum() // 2
            nonfinite = (~jnp.isfinite(agents.positions)).sum()
            # pairs that started apart and met during the step (ran into, or through, each other)
            closest = core.closest_approach(before, velocity / 10.0, progress)  # core.physics's default fps
            passes = ((closest < 2 * AGENT_RADIUS * 0.98) & (was >= 2 * AGENT_RADIUS)).sum() // 2
            return (agents, failures + jnp.stack([crossed, overlaps, nonfinite, passes])), None

        (agents, failures), _ = jax.lax.scan(step, (agents, jnp.zeros(4, jnp.int32)), jax.random.split(key, args.steps))
        return agents, failures

    start = time.perf_counter()
    agents, failures = jax.block_until_ready(run(agents, jax.random.PRNGKey(1)))
    result = dict(
        device=jax.devices()[0].device_kind, agent_steps=args.n_envs * args.n_agents * args.steps,
        wall_crossings=int(failures[0]), agent_overlaps=int(failures[1]), nonfinite_positions=int(failures[2]),
        agent_passes=int(failures[3]),
        seconds=time.perf_counter() - start, n_envs=args.n_envs, n_agents=args.n_agents, speed=args.speed,
    )  # fmt: skip
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
