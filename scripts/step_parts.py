"""Times the parts of an env's step on the present device: the whole step, its observation call alone (with the
scenery's lights, and with none, which shows what lighting agents' models costs), a full-resolution render, and
the physics. Each part is a jitted scan of `--steps` calls; milliseconds per call, median of `--repeats`.

    python scripts/step_parts.py deathmatch --n-envs 65536
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxstep import core
from jaxstep.envs import REGISTRY


def timed(fn, args, steps: int, repeats: int) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env")
    parser.add_argument("--n-envs", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = REGISTRY[args.env](n_envs=args.n_envs)
    state, _ = env.reset(jax.random.PRNGKey(0))
    n, A, steps = env.n_envs, env.n_agents, args.steps
    subsample = getattr(env, "subsample", 1)

    def step_scan(state):
        def body(s, key):
            action = jax.random.randint(key, (n, A), 0, 7)
            s, ts = env.step(s, action)
            # the observations too: an env whose reward is constant (Minimal) would otherwise compile to nothing
            return s, ts.reward.sum() + sum(jnp.sum(x[:, 0]) for x in jax.tree.leaves(ts.obs))

        return jax.lax.scan(body, state, jax.random.split(jax.random.PRNGKey(1), steps))[1].sum()

    def turning(call):
        def run(scenery, agents):
            def body(a, _):
                out = call(scenery, a)
                a = dataclasses.replace(a, angles=a.angles + 1.0)
                return a, sum(jnp.sum(x[:, 0]) for x in jax.tree.leaves(out))

            return jax.lax.scan(body, agents, None, length=steps)[1].sum()

        return run

    def observe(s, a):
        return core.observe(s, a, env.res, env.fov, subsample=subsample)

    def render(s, a):
        return core.render(s, a, env.res, env.fov)

    def physics(s, a):
        return core.physics(s, a, env.fps)

    unlit = dataclasses.replace(env.scenery, light_offsets=jnp.zeros_like(env.scenery.light_offsets))
    agents = state.agents
    parts = {
        "step": timed(step_scan, (state,), steps, args.repeats),
        "observe": timed(turning(observe), (env.scenery, agents), steps, args.repeats),
        "observe, no lights": timed(turning(observe), (unlit, agents), steps, args.repeats),
        "render": timed(turning(render), (env.scenery, agents), steps, args.repeats),
        "physics": timed(turning(physics), (env.scenery, agents), steps, args.repeats),
    }
    print(f"{args.env}, {n} envs x {A} agents, res {env.res}, subsample {subsample}, {jax.devices()[0].device_kind}")
    for name, ms in parts.items():
        print(f"  {name:20s} {ms:8.3f} ms/call  ({n * A / ms / 1e3:8.2f} M agent-frames/s)")


if __name__ == "__main__":
    main()
