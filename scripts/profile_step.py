"""Runs an env's random-action scan twice (compiled once), for a kernel profiler such as ncu.

    XLA_FLAGS=--xla_gpu_enable_command_buffer= ncu --csv --metrics gpu__time_duration.sum --clock-control none \\
        python scripts/profile_step.py minimal --n-envs 65536 --steps 50 > minimal.csv
    python scripts/ncu_summary.py minimal.csv --steps 100

Command buffers off: ncu cannot time the kernels of a CUDA graph with conditional nodes, which is what XLA makes
of the scan. Both runs are profiled, so pass `--steps` of twice this script's steps to the summary. Everything
the GPU runs is counted, the env's construction and each run's reset included: use enough steps that those
are small beside them.
"""

import argparse

import jax

from jaxstep import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env")
    parser.add_argument("--n-envs", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    run = jax.jit(bench.env_scan(args.env, args.n_envs, args.steps)[1])
    compiled = run.lower(jax.random.PRNGKey(0)).compile()
    for seed in range(2):
        jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))


if __name__ == "__main__":
    main()
