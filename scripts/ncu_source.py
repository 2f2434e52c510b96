"""Where a kernel's instructions and stalls go, from ncu's per-instruction (SASS) source page.

    XLA_FLAGS=--xla_gpu_enable_command_buffer= ncu --kernel-name regex:render_kernel --launch-skip 2 \\
        --launch-count 1 --section SourceCounters -o render python scripts/profile_step.py minimal --n-envs 65536
    ncu -i render.ncu-rep --page source --csv --print-source sass > render_sass.csv
    python scripts/ncu_source.py render_sass.csv --warps 131072

The SASS page carries the metrics (ncu's CUDA-source page came back without them for this build). Prints
instructions executed and stall samples by opcode, then the hottest instructions in program order; with
`--warps` (the launch's warp count: rays / 32 for the render kernel), instruction counts are per warp.
"""

import argparse
import collections
import csv
import io

EXECUTED, STALLS = "Instructions Executed", "Warp Stall Sampling (All Samples)"


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def opcode(sass: str) -> str:
    words = sass.split()
    if words and words[0].startswith("@"):  # a predicate guard
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--warps", type=float, default=1.0, help="divide instruction counts by this")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    text = open(args.csv, errors="replace").read()
    start = text.find('"Address"')
    if start < 0:
        raise SystemExit(f"{args.csv}: no per-instruction table (expected ncu --page source --print-source sass)")
    rows = list(csv.DictReader(io.StringIO(text[start:])))
    executed = [number(r[EXECUTED]) / args.warps for r in rows]
    stalls = [number(r[STALLS]) for r in rows]
    total_executed, total_stalls = sum(executed) or 1.0, sum(stalls) or 1.0
    print(f"{len(rows)} instructions; executed {total_executed:.6g}, stall samples {total_stalls:.0f}")

    by_opcode = collections.defaultdict(lambda: [0.0, 0.0])
    for r, e, s in zip(rows, executed, stalls, strict=True):
        by_opcode[opcode(r["Source"])][0] += e
        by_opcode[opcode(r["Source"])][1] += s
    print("\nopcode      executed  stalls")
    for name, (e, s) in sorted(by_opcode.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"{name:10s} {100 * e / total_executed:8.1f}% {100 * s / total_stalls:6.1f}%")

    hottest = sorted(range(len(rows)), key=lambda i: -stalls[i])[: args.top]
    print("\nhottest by stall samples, in program order (index, executed, samples, instruction)")
    for i in sorted(hottest):
        print(f"{i:6d} {executed[i]:10.4g} {stalls[i]:6.0f}  {rows[i]['Source'].strip()[:90]}")


if __name__ == "__main__":
    main()
