#!/usr/bin/env bash
# Before/after benchmark in one run: builds .before/ (an earlier commit's tree) and then this tree, each as the
# editable install in turn, and runs the same `jaxstep bench` commands on both (each argument one command line).
# Results go to $OUT (default ./ab-results) as <i>_<kind>_before.json and <i>_<kind>_after.json, <i> being the
# command's place in the list (from 1) and <kind> its first word.
#
#   rm -rf .before && mkdir .before && git archive REF | tar -x -C .before   # here; .before is git-ignored
#   bash scripts/ab_bench.sh "kernels --backends ffi --n-envs 8192 32768 --res 256" "envs --envs minimal"
#
# On the device machine, carry .before (device `carry`). The after build is left installed.
set -euo pipefail
[ -d .before ] || { echo "no .before/: extract the earlier commit there first (see the top of this script)"; exit 2; }
[ $# -ge 1 ] || { echo "usage: $0 \"kernels|envs [bench arguments]\" ..."; exit 2; }
OUT=${OUT:-ab-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # the benches run from /tmp
export PYTHONUNBUFFERED=1
root=$PWD
for side in before after; do
  src=$root; [ $side = before ] && src=$root/.before
  (cd "$src" && python3 -m pip install --no-build-isolation --no-deps -q -e .) 2>&1 | grep -v WARNING || true
  # run from elsewhere, so that the editable install decides which tree is imported
  (cd /tmp && python3 -c "import jaxstep; print('$side:', jaxstep.__file__)")
  i=0
  for bench in "$@"; do
    i=$((i + 1))
    read -r -a args <<< "$bench"
    (cd /tmp && python3 -m jaxstep.cli bench "${args[@]}" --out "$OUT/${i}_${args[0]}_$side.json" 2>&1 |
      grep -E "n_envs=|frames|steps/s" || true)
  done
done
