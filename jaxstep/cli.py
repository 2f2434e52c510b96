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


def demo(name: str, n_envs: int, steps: int, out: str, chunk: int = 10) -> None:
    """Steps n_envs envs with random actions on the default device, prints frames per second, records env 0."""
    import jax
    import numpy as np

    from jaxstep import envs, recording
    from jaxstep.progress import progress

    env = envs.make(name, n_envs=n_envs)
    chunk = min(chunk, steps)

    @jax.jit
    def advance(state, key):
        def step(state, key):
            state, ts = env.step(state, env.action_space.sample(key))
            return state, env.snapshot(state, ts.obs, 0)

        return jax.lax.scan(step, state, jax.random.split(key, chunk))

    key = jax.random.PRNGKey(0)
    state, _ = jax.jit(env.reset)(key)
    n_chunks = -(-steps // chunk)
    snapshots, timed = [], 0.0
    for i in progress(range(n_chunks), desc=f"{name} x {n_envs}"):
        start = time.perf_counter()
        state, snapshot = jax.block_until_ready(advance(state, jax.random.fold_in(key, i)))
        if i:  # the first chunk compiles
            timed += time.perf_counter() - start
        snapshots.append(jax.device_get(snapshot))
    device = jax.devices()[0]
    if n_chunks > 1:
        fps = n_envs * env.n_agents * chunk * (n_chunks - 1) / timed
        print(f"{fps:,.0f} frames/s ({n_envs} envs x {env.n_agents} agents) on {device.platform}: {device.device_kind}")
    trajectory = jax.tree.map(lambda *xs: np.concatenate(xs)[:steps], *snapshots)
    video = recording.record(env, trajectory, out)
    print(f"wrote {video.path} ({steps} frames of env 0)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxstep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    d = commands.add_parser("demo", help="step envs with random actions and record a video of env 0")
    d.add_argument("env", nargs="?", default="explorer", help="env name (default: explorer)")
    d.add_argument("--n-envs", type=_positive_int, default=256)
    d.add_argument("--steps", type=_positive_int, default=100)
    d.add_argument("--out", default="demo.mp4", help="video to write, .mp4 or .gif (default: demo.mp4)")

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
        from jaxstep.envs import REGISTRY
        from jaxstep.recording import FORMATS

        if args.env not in REGISTRY:
            parser.error(f"unknown env {args.env!r}; choose from {', '.join(sorted(REGISTRY))}")
        if not args.out.endswith(FORMATS):
            parser.error(f"--out: expected a file ending in {' or '.join(FORMATS)}, got {args.out!r}")
        demo(args.env, args.n_envs, args.steps, args.out)
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
