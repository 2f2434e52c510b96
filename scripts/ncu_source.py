"""Top source lines of an ncu source-page CSV, by warp stall samples and by instructions executed.

    XLA_FLAGS=--xla_gpu_enable_command_buffer= ncu --kernel-name regex:render_kernel --launch-skip 2 \\
        --launch-count 1 --section SourceCounters --import-source yes -o render \\
        python scripts/profile_step.py minimal --n-envs 65536
    ncu -i render.ncu-rep --page source --csv --print-source cuda > render_source.csv
    python scripts/ncu_source.py render_source.csv

The CUDA build carries -lineinfo, so the samples map to lines of kernels.h and handlers.cu.
"""

import argparse
import csv
import io


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    text = open(args.csv, errors="replace").read()
    start = text.find('"#"') if '"#"' in text else text.find('"Line')
    rows = list(csv.DictReader(io.StringIO(text[max(start, 0) :])))
    if not rows:
        print(text[:2000])
        return
    columns = list(rows[0])
    print("columns:", columns)
    source = next((c for c in columns if c.lower() in ("source", "source code")), columns[1])
    for key in ("Warp Stall Sampling (All Samples)", "Instructions Executed"):
        column = next((c for c in columns if c.startswith(key)), None)
        if column is None:
            continue
        total = sum(number(r[column]) for r in rows) or 1.0
        print(f"\n== {column}: total {total:.4g}")
        for r in sorted(rows, key=lambda r: -number(r[column]))[: args.top]:
            line = r.get("#", r.get("Line", ""))
            print(f"{100 * number(r[column]) / total:6.2f}%  {line:>5}  {r[source].strip()[:110]}")


if __name__ == "__main__":
    main()
