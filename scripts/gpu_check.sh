#!/usr/bin/env bash
# On a CUDA machine: build in place, run the kernel tests (CUDA vs CPU vs reference), the sanitizer and the
# kernel benchmark. Results go to $OUT (default ./gpu-results).
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -5 || exit 1
python3 -c "import jax; from jaxstep.ffi import calls; print(jax.__version__, jax.devices(), calls.register())"
python3 -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py tests/test_kernels.py tests/test_envs.py 2>&1 \
  | tee "$OUT/tests.txt" | tail -15
# each buffer its own allocation, so the sanitizers follow them (and initcheck tracks no preallocated pool); every
# kernel instrumented, since initcheck would take writes by uninstrumented XLA kernels for uninitialised memory
for tool in memcheck racecheck initcheck; do
  XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_ALLOCATOR=platform timeout 300 \
    compute-sanitizer --tool $tool --error-exitcode 9 python3 scripts/sanitize_kernels.py > "$OUT/$tool.txt" 2>&1
  echo "$tool exit $?" | tee -a "$OUT/$tool.txt"; tail -3 "$OUT/$tool.txt"
done
python3 -m jaxstep.cli bench kernels --n-envs 1024 8192 32768 --res 256 --out "$OUT/kernels.json"
python3 -m jaxstep.cli bench envs --n-envs 1024 8192 32768 --steps 50 --out "$OUT/envs.json"
