"""Sharding over several devices: tests/multidevice/ runs in a fresh process that has 4 CPU devices."""

import os
import subprocess
import sys
from pathlib import Path


def test_sharded_envs_on_four_cpu_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    folder = Path(__file__).parent / "multidevice"
    # run from the test folder, so the installed jaxstep is imported rather than the source tree
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                            env=env, capture_output=True, text=True, timeout=900, cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
