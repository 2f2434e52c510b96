"""Sums an `ncu --csv --metrics gpu__time_duration.sum` log by kernel name: microseconds per step, largest first."""

import argparse
import collections
import csv

MICROSECONDS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv")
    parser.add_argument("--steps", type=int, required=True, help="env steps the profiled program ran in all")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.csv) as f:
        lines = [line for line in f if line.startswith('"')]  # drop the program's own output
    totals, counts = collections.Counter(), collections.Counter()
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = row["Metric Unit"]
        if unit not in MICROSECONDS:
            raise SystemExit(f"{args.csv}: unknown time unit {unit!r} (known: {sorted(MICROSECONDS)})")
        name = row["Kernel Name"]
        totals[name] += float(row["Metric Value"].replace(",", "")) * MICROSECONDS[unit]
        counts[name] += 1
    total = sum(totals.values())
    print(f"{total / args.steps:10.1f} us per step on the GPU in {sum(counts.values())} kernels")
    for name, us in totals.most_common(args.top):
        print(f"{us / args.steps:10.1f} us {counts[name] / args.steps:6.1f}x  {name[:100]}")


if __name__ == "__main__":
    main()
