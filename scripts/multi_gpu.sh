#!/usr/bin/env bash
# On a host with several GPUs: build, CUDA kernel tests, the 1e8 agent-step tunnelling count, racecheck, and
# throughput over 1, 2, 4 GPUs. Sized to finish inside 10 minutes. Results go to $OUT (default ./gpu-results).
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -3
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py 2>&1 \
  | tee "$OUT/tests.txt" | tail -3
CUDA_VISIBLE_DEVICES=0 timeout 80 python3 scripts/tunnelling.py --n-envs 65536 --n-agents 4 --steps 400 \
  --out "$OUT/tunnelling.json"
CUDA_VISIBLE_DEVICES=0 timeout 60 compute-sanitizer --tool racecheck --kernel-name kns=jaxstep --error-exitcode 9 \
  python3 scripts/sanitize_kernels.py \
  > "$OUT/racecheck.txt" 2>&1; echo "racecheck exit $?" | tee -a "$OUT/racecheck.txt"; tail -2 "$OUT/racecheck.txt"
timeout 230 python3 -m jaxstep.cli bench scaling --envs explorer --n-envs 8192 --devices 1 2 4 --steps 20 \
  --out "$OUT/scaling.json"
