"""The `jaxstep` command: `jaxstep demo`, `jaxstep train` and `jaxstep bench kernels|envs|scaling|train`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

PLOT_FORMATS = (".png", ".svg", ".pdf")


def _int_at_least(minimum: int, text: str) -> int:
    kind = "a positive" if minimum == 1 else "a non-negative"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {kind} integer, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(1, text)


def _count(text: str) -> int:
    return _int_at_least(0, text)


def _config_field(text: str) -> tuple[str, object]:
    """KEY=VALUE for a PPOConfig field, VALUE converted to the field's type."""
    import dataclasses

    from jaxstep.agents.config import PPOConfig

    key, sep, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(PPOConfig) if f.type in ("int", "float", "str")}
    if not sep or key not in fields:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}, "
                                         f"got {text!r}")  # fmt: skip
    kind = {"int": int, "float": float, "str": str}[fields[key].type]
    try:
        return key, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{key}: expected {fields[key].type}, got {value!r}") from None


def demo(name: str | None, n_envs: int, steps: int, out: str, agent: str | None = None, chunk: int = 10) -> None:
    """Steps n_envs envs on the default device (random actions, or a trained agent's), prints frames per second,
    and records env 0."""
    import jax
    import numpy as np

    from jaxstep import envs, recording
    from jaxstep.agents import heads
    from jaxstep.progress import progress

    if agent:
        from jaxstep.agents.train import load_policy

        env, net, params = load_policy(agent, n_envs)
        name = env.__class__.__name__.lower()
    else:
        env, net, params = envs.make(name, n_envs=n_envs), None, None
    chunk = min(chunk, steps)
    B = env.n_envs * env.n_agents

    def act(key, obs, carry, done):
        if net is None:
            return env.action_space.sample(key), carry
        flat = jax.tree.map(lambda x: x.reshape(B, *x.shape[2:]), obs)
        logits, _, carry = net.apply(params, flat, carry, done.reshape(B))
        return heads.sample(key, logits).reshape(env.n_envs, env.n_agents), carry

    @jax.jit
    def advance(carry, key):
        def step(carry, key):
            state, obs, net_carry, done = carry
            action, net_carry = act(key, obs, net_carry, done)
            state, ts = env.step(state, action)
            return (state, ts.obs, net_carry, ts.done), env.snapshot(state, ts.obs, 0)

        return jax.lax.scan(step, carry, jax.random.split(key, chunk))

    key = jax.random.PRNGKey(0)
    state, ts = jax.jit(env.reset)(key)
    net_carry = net.initial_carry(B) if net is not None else None
    state = (state, ts.obs, net_carry, ts.done)
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
    d.add_argument("--agent", metavar="LOGDIR", help="act with the agent trained in LOGDIR (`jaxstep train`)")

    t = commands.add_parser("train", help="train an LSTM agent with PPO, writing LOGDIR/metrics.csv and checkpoints")
    t.add_argument("env", help="env name")
    t.add_argument("--total-steps", type=_positive_int, default=10_000_000, help="agent-steps to train for")
    t.add_argument("--n-envs", type=_positive_int, default=1024)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--logdir", default="runs/latest")
    t.add_argument("--resume", action="store_true", help="continue from LOGDIR's latest checkpoint")
    t.add_argument("--agent", choices=["lstm", "feedforward"], default="lstm")
    t.add_argument("--rollout", type=_positive_int, default=32, help="env steps per update")
    t.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the network's compute dtype")
    t.add_argument("--updates-per-chunk", type=_positive_int, default=10, help="updates per compiled call")

    b = commands.add_parser("bench", help="measure throughput and write JSON (and a plot)")
    b.add_argument("what", choices=["kernels", "envs", "scaling", "train"])
    b.add_argument("--devices", type=_positive_int, nargs="+", default=[1, 2, 4], help="device counts (scaling)")
    b.add_argument("--train-updates", type=_count, default=6, help="timed PPO updates (scaling; 0: envs alone)")
    b.add_argument("--envs", nargs="+", default=["minimal", "explorer", "deathmatch", "waypoint"])
    sizes = b.add_mutually_exclusive_group()
    sizes.add_argument("--n-envs", type=_positive_int, nargs="+", default=[1024, 8192])
    sizes.add_argument(
        "--sweep", action="store_true",
        help="n_envs from --min-n-envs, doubling up to --max-n-envs or the first that runs out of device memory",
    )  # fmt: skip
    b.add_argument("--min-n-envs", type=_positive_int, default=1024, help="first n_envs of --sweep (default: 1024)")
    b.add_argument("--max-n-envs", type=_positive_int, default=1 << 20, help="last n_envs of --sweep (default: 2^20)")
    b.add_argument("--res", type=_positive_int, default=256)
    b.add_argument("--kernels", nargs="+", choices=["render", "observe", "physics"],
                   default=["render", "observe", "physics"], help="which kernels (bench kernels)")
    b.add_argument("--subsample", type=_positive_int, default=4, help="rays per image column of `observe`")
    b.add_argument("--n-agents", type=_positive_int, default=1)
    b.add_argument("--backends", nargs="+", choices=["ffi", "reference"], default=["ffi", "reference"])
    b.add_argument("--geometry", choices=["floorplans", "mazes", "box"], default="floorplans")
    b.add_argument("--steps", type=_positive_int, default=20, help="kernel calls per timed scan")
    b.add_argument("--repeats", type=_positive_int, default=5)
    b.add_argument("--reference-max-envs", type=_positive_int, default=8192)
    b.add_argument("--set", type=_config_field, nargs="+", default=[], metavar="KEY=VALUE",
                   help="PPO config changes (bench train), e.g. --set dtype=bfloat16 unroll=8")
    b.add_argument("--out", help="JSON file to write (default: stdout)")
    b.add_argument("--plot", metavar="PATH.png", help="also plot throughput against n_envs to PATH (.png, .svg, .pdf)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from jaxstep.envs import REGISTRY
        from jaxstep.recording import FORMATS

        if args.env not in REGISTRY:
            parser.error(f"unknown env {args.env!r}; choose from {', '.join(sorted(REGISTRY))}")
        if not args.out.endswith(FORMATS):
            parser.error(f"--out: expected a file ending in {' or '.join(FORMATS)}, got {args.out!r}")
        if args.agent:
            from jaxstep.agents.train import latest_checkpoint

            if latest_checkpoint(args.agent) is None:
                parser.error(f"--agent: no checkpoint in {args.agent}/checkpoints")
        demo(args.env, args.n_envs, args.steps, args.out, args.agent)
    elif args.command == "train":
        from jaxstep.agents import PPOConfig, run
        from jaxstep.envs import REGISTRY

        if args.env not in REGISTRY:
            parser.error(f"unknown env {args.env!r}; choose from {', '.join(sorted(REGISTRY))}")
        config = PPOConfig(env=args.env, n_envs=args.n_envs, total_steps=args.total_steps, seed=args.seed,
                           agent=args.agent, rollout=args.rollout, dtype=args.dtype)  # fmt: skip
        state, _ = run(config, args.logdir, resume=args.resume, updates_per_chunk=args.updates_per_chunk)
        print(f"trained {int(state.update)} updates; metrics in {args.logdir}/metrics.csv")
    elif args.command == "bench":
        if args.what in ("scaling", "train") and (args.sweep or args.plot):
            parser.error("--sweep and --plot apply to `bench kernels` and `bench envs`")
        if args.plot and not args.plot.endswith(PLOT_FORMATS):
            parser.error(f"--plot: expected a file ending in {', '.join(PLOT_FORMATS)}, got {args.plot!r}")
        if args.sweep and args.min_n_envs > args.max_n_envs:
            parser.error(f"--min-n-envs {args.min_n_envs} is more than --max-n-envs {args.max_n_envs}")
        from jaxstep import bench

        def say(line):
            print(line, file=sys.stderr)

        if args.what == "kernels" and args.res % args.subsample:
            parser.error(f"--subsample {args.subsample} must divide --res {args.res}")
        if args.sweep:
            args.n_envs = bench.sweep_sizes(args.max_n_envs, args.min_n_envs)
        if args.what == "scaling":
            per_device = args.n_envs[0]
            result = bench.scaling(args.envs[0], per_device, args.devices, steps=args.steps,
                                   train_updates=args.train_updates, progress=say)  # fmt: skip
            bench.write(result, args.out)
            return 0
        if args.what == "train":
            from jaxstep import bench_training
            from jaxstep.envs import REGISTRY

            if args.envs[0] not in REGISTRY:
                parser.error(f"--envs: unknown env {args.envs[0]!r}; choose from {', '.join(sorted(REGISTRY))}")
            try:
                result = bench_training.training(args.envs[0], args.n_envs, repeats=args.repeats,
                                                 overrides=dict(args.set), progress=say)  # fmt: skip
            except ValueError as e:
                parser.error(str(e))
            bench.write(result, args.out)
            return 0
        if args.what == "envs":
            result = bench.envs(args.envs, args.n_envs, steps=args.steps, repeats=args.repeats, progress=say)
        else:
            result = bench.kernels(
                n_envs=args.n_envs, res=args.res, n_agents=args.n_agents, backends=args.backends,
                geometry=args.geometry, steps=args.steps, repeats=args.repeats,
                reference_max_envs=args.reference_max_envs, progress=say, kernels=args.kernels,
                subsample=args.subsample,
            )  # fmt: skip
        bench.write(result, args.out)
        if args.plot:
            bench.plot(result, args.plot)
            say(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
