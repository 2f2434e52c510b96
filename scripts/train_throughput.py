"""End-to-end PPO throughput (rollout + learning) for a few configs, side by side in one process.

    python scripts/train_throughput.py --env explorer --configs 8192:float32 8192:bfloat16 --updates 4 --out t.json

Each config is N_ENVS:DTYPE; one update is compiled and run once, then `--updates` more are timed. The rollout
half (acting and stepping the envs) is timed alone the same way; learning takes the rest.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from jaxstep.agents.ppo import PPOConfig, make_train, steps_per_update


def timed(step, state, updates: int) -> tuple[float, float]:
    """(compile and first run, mean of the next `updates`) in seconds, for step: state -> (state, ...)."""
    start = time.perf_counter()
    state, *rest = step(state)
    jax.block_until_ready(rest)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(updates):
        state, *rest = step(state)
    jax.block_until_ready(rest)
    return first, (time.perf_counter() - start) / updates


def measure(env: str, n_envs: int, dtype: str, updates: int) -> dict:
    config = PPOConfig(env=env, n_envs=n_envs, dtype=dtype, total_steps=10**12)
    train = make_train(config)
    state = train.init(jax.random.PRNGKey(0))
    compile_seconds, seconds = timed(jax.jit(train.update), state, updates)
    _, collect_seconds = timed(jax.jit(train.collect), state, updates)
    rate = steps_per_update(config, train.env) / seconds
    return dict(env=env, n_envs=n_envs, dtype=dtype, updates=updates, seconds_per_update=seconds,
                collect_seconds=collect_seconds, learn_seconds=seconds - collect_seconds,
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
        print(f"{spec:20s} {row['agent_steps_per_second'] / 1e6:6.3f} M agent-steps/s; per update "
              f"{row['seconds_per_update'] * 1e3:.0f} ms = rollout {row['collect_seconds'] * 1e3:.0f} ms + learning "
              f"{row['learn_seconds'] * 1e3:.0f} ms (compile {row['compile_seconds']:.0f} s)", flush=True)  # fmt: skip
    result = dict(device=str(jax.devices()[0].device_kind), jax=jax.__version__, results=results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
