#!/usr/bin/env bash
# On a host with several GPUs: build, CUDA kernel tests, the 1e8 agent-step tunnelling count, racecheck and
# initcheck, and throughput over 1, 2, 4 GPUs. Results go to $OUT (default ./gpu-results).
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/device.txt"
python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -3
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py 2>&1 \
  | tee "$OUT/tests.txt" | tail -3
CUDA_VISIBLE_DEVICES=0 timeout 90 python3 scripts/tunnelling.py --n-envs 65536 --n-agents 4 --steps 400 \
  --out "$OUT/tunnelling.json"
for tool in racecheck initcheck; do
  CUDA_VISIBLE_DEVICES=0 timeout 100 compute-sanitizer --tool $tool --error-exitcode 9 python3 scripts/sanitize_kernels.py \
    > "$OUT/$tool.txt" 2>&1; echo "$tool exit $?" | tee -a "$OUT/$tool.txt"; tail -2 "$OUT/$tool.txt"
done
timeout 200 python3 -m jaxstep.cli bench scaling --envs explorer --n-envs 8192 --devices 1 2 4 --steps 20 \
  --out "$OUT/scaling.json"
