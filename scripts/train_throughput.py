"""End-to-end PPO throughput (rollout + learning) for a few configs, side by side in one process.

    python scripts/train_throughput.py --env explorer --configs 8192:float32 8192:bfloat16 --updates 4 --out t.json

Each config is N_ENVS:DTYPE; one update is compiled and run once, then `--updates` more are timed.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from jaxstep.agents.ppo import PPOConfig, make_train, steps_per_update


def measure(env: str, n_envs: int, dtype: str, updates: int) -> dict:
    config = PPOConfig(env=env, n_envs=n_envs, dtype=dtype, total_steps=10**12)
    train = make_train(config)
    update = jax.jit(train.update)
    state = train.init(jax.random.PRNGKey(0))
    start = time.perf_counter()
    state, metrics = update(state)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(updates):
        state, metrics = update(state)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    rate = steps_per_update(config, train.env) * updates / seconds
    return dict(env=env, n_envs=n_envs, dtype=dtype, updates=updates, seconds=seconds,
                compile_seconds=compile_seconds, agent_steps_per_second=rate)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="explorer")
    parser.add_argument("--configs", nargs="+", default=["8192:float32", "8192:bfloat16"])
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for spec in args.configs:
        n_envs, dtype = spec.split(":")
        row = measure(args.env, int(n_envs), dtype, args.updates)
        results.append(row)
        print(f"{spec:20s} {row['agent_steps_per_second'] / 1e6:6.3f} M agent-steps/s "
              f"(compile {row['compile_seconds']:.0f} s)", flush=True)  # fmt: skip
    result = dict(device=str(jax.devices()[0].device_kind), jax=jax.__version__, results=results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
