"""Traces PPO updates with jax.profiler and sums device time per kernel (or per XLA op on the CPU).

    python scripts/trace_update.py --n-envs 8192 --updates 3 --top 40 --set dtype=bfloat16 agent=feedforward
"""

from __future__ import annotations

import argparse
import collections
import glob
import tempfile

import jax

from jaxstep.agents.ppo import PPOConfig, make_train
from jaxstep.cli import _config_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="explorer")
    parser.add_argument("--n-envs", type=int, default=8192)
    parser.add_argument("--set", type=_config_field, nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    config = PPOConfig(env=args.env, n_envs=args.n_envs, total_steps=10**12, **dict(args.set))
    train = make_train(config)
    update = jax.jit(train.update)
    state = train.init(jax.random.PRNGKey(0))
    state, m = update(state)
    jax.block_until_ready((state, m))
    folder = tempfile.mkdtemp()
    with jax.profiler.trace(folder):
        for _ in range(args.updates):
            state, m = update(state)
        jax.block_until_ready((state, m))
    path = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    for plane in data.planes:
        if not (plane.name.startswith("/device:GPU") or plane.name == "/host:CPU"):
            continue
        for line in plane.lines:
            totals, counts = collections.Counter(), collections.Counter()
            for e in line.events:
                totals[e.name] += e.duration_ns
                counts[e.name] += 1
            if not totals:
                continue
            busy = sum(totals.values())
            print(f"== {plane.name} / {line.name}: {sum(counts.values())} events, {busy / 1e6 / args.updates:.2f} ms"
                  f" per update")
            for name, ns in totals.most_common(args.top):
                print(f"{ns / 1e6 / args.updates:9.3f} ms {counts[name] // args.updates:6d}x  {name[:120]}")


if __name__ == "__main__":
    main()
