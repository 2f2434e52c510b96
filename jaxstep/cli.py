"""The `jaxstep` command: `jaxstep demo` and `jaxstep bench kernels`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def demo(n_envs: int, steps: int, out: str) -> None:
    """Spins agents in boxes inside one jitted scan, prints frames per second, saves a picture of env 0."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxstep import core, scene, toys

    scenery = scene.scenery([toys.box()] * n_envs, n_agents=1)
    key = jax.random.PRNGKey(0)
    positions = jax.random.uniform(key, (n_envs, 1, 2), minval=2.0, maxval=5.0)
    agents = dataclasses.replace(core.agents(n_envs, 1, positions=positions), angvelocity=jnp.full((n_envs, 1), 90.0))

    @jax.jit
    def rollout(agents):
        def step(agents, key):
            velocity = jax.random.normal(key, agents.velocity.shape) * 2
            agents, _ = core.physics(scenery, dataclasses.replace(agents, velocity=velocity))
            return agents, core.render(scenery, agents).screen[0, 0]

        return jax.lax.scan(step, agents, jax.random.split(key, steps))

    jax.block_until_ready(rollout(agents))  # compile
    start = time.perf_counter()
    agents, screens = jax.block_until_ready(rollout(agents))
    seconds = time.perf_counter() - start
    print(f"{n_envs} envs x {steps} steps on {jax.devices()[0].device_kind}: {n_envs * steps / seconds:,.0f} frames/s")

    fig, (plan, view) = plt.subplots(1, 2, figsize=(10, 5))
    scene.display(scenery, 0, ax=plan)
    x, y = jax.device_get(agents.positions[0, 0])
    plan.plot([x], [y], "ko")
    view.imshow(scene.gamma_encode(jax.device_get(screens).clip(0, 1)), aspect="auto", interpolation="nearest")
    view.set(title="env 0's view, one row per step", xlabel="pixel", ylabel="step")
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxstep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    d = commands.add_parser("demo", help="step box envs on the default device and save a picture")
    d.add_argument("--n-envs", type=_positive_int, default=1024)
    d.add_argument("--steps", type=_positive_int, default=100)
    d.add_argument("--out", default="demo.png", help="PNG to write (default: demo.png)")

    b = commands.add_parser("bench", help="measure throughput and write JSON")
    b.add_argument("what", choices=["kernels", "envs"])
    b.add_argument("--envs", nargs="+", default=["minimal", "explorer", "deathmatch", "waypoint"])
    b.add_argument("--n-envs", type=_positive_int, nargs="+", default=[1024, 8192])
    b.add_argument("--res", type=_positive_int, default=256)
    b.add_argument("--n-agents", type=_positive_int, default=1)
    b.add_argument("--backends", nargs="+", choices=["ffi", "reference"], default=["ffi", "reference"])
    b.add_argument("--geometry", choices=["floorplans", "box"], default="floorplans")
    b.add_argument("--steps", type=_positive_int, default=20, help="kernel calls per timed scan")
    b.add_argument("--repeats", type=_positive_int, default=5)
    b.add_argument("--reference-max-envs", type=_positive_int, default=8192)
    b.add_argument("--out", help="JSON file to write (default: stdout)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.n_envs, args.steps, args.out)
    elif args.command == "bench":
        from jaxstep import bench

        def say(line):
            print(line, file=sys.stderr)

        if args.what == "envs":
            result = bench.envs(args.envs, args.n_envs, steps=args.steps, repeats=args.repeats, progress=say)
            bench.write(result, args.out)
            return 0
        result = bench.kernels(
            n_envs=args.n_envs, res=args.res, n_agents=args.n_agents, backends=args.backends,
            geometry=args.geometry, steps=args.steps, repeats=args.repeats,
            reference_max_envs=args.reference_max_envs, progress=say,
        )  # fmt: skip
        bench.write(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
