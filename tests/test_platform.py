"""BLAS detection and the one-time re-exec with OpenBLAS on Linux (both paths run for real)."""

import os
import subprocess
import sys

import pytest

from mlx_distill import platform

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS re-exec exists only on Linux")


def _doctor(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", platform.REEXEC_MARKER)}
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-m", "mlx_distill", "doctor"], env=env, capture_output=True, text=True, timeout=120
    )


def test_reexec_preloads_openblas_when_installed():
    library = platform.find_openblas()
    if library is None:
        pytest.skip("no OpenBLAS on this machine: .ci/run installs libopenblas0-pthread")
    result = _doctor({platform.OPENBLAS_OVERRIDE: library})
    assert result.returncode == 0, result.stderr
    assert "OpenBLAS preloaded, fast" in result.stdout
    assert "warning" not in result.stderr


def test_without_openblas_prints_the_fix():
    result = _doctor({platform.OPENBLAS_OVERRIDE: "/nonexistent/libblas.so.3"})
    assert result.returncode == 0, result.stderr
    assert platform.OPENBLAS_FIX in result.stderr
    assert "reference BLAS" in result.stdout


def test_opt_out_keeps_the_bundled_blas_quietly():
    result = _doctor({platform.OPT_OUT: "1"})
    assert result.returncode == 0, result.stderr
    assert "slow" in result.stdout
    assert result.stderr == ""


def test_memory_and_format():
    assert platform.available_memory_bytes() > 0
    assert platform.total_memory_bytes() >= platform.available_memory_bytes() // 2
    assert platform.format_bytes(1_500_000_000) == "1.5 GB"


def test_serve_lets_idle_openblas_threads_sleep(demo_models, monkeypatch):
    """`serve` re-execs with OpenBLAS's spin timeout at its minimum; a value the user set is kept."""
    library = platform.find_openblas()
    if library is None:
        pytest.skip("no OpenBLAS on this machine: .ci/run installs libopenblas0-pthread")
    env = {k: v for k, v in os.environ.items() if k not in (platform.REEXEC_MARKER, "OPENBLAS_THREAD_TIMEOUT")}
    env.update(LD_PRELOAD=library, HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", "serve", str(demo_models["student"]),
                                "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            if "serving" in process.stderr.readline():
                break
        environ = open(f"/proc/{process.pid}/environ", "rb").read().split(b"\0")
        assert b"OPENBLAS_THREAD_TIMEOUT=4" in environ
    finally:
        process.terminate()
        process.wait(60)
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "10")
    assert platform.blas_environment(["serve", "x"]) == {}
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    assert platform.blas_environment(["serve", "x"]) == platform.SERVING_BLAS_ENV
    assert platform.blas_environment(["run", "x"]) == platform.blas_environment([]) == {}


_THREADS_PROBE = """
import ctypes
import mlx.core as mx
import numpy as np
from mlx_distill import platform

get_threads = ctypes.CDLL(None).openblas_get_num_threads
a, b = mx.random.normal((16, 96)), mx.random.normal((96, 400))  # above OpenBLAS's own threading threshold
seen = [get_threads()]
with platform.blas_threads_for(platform.SINGLE_THREAD_MATMUL - 1):
    seen.append(get_threads())
    one_thread = np.array(a @ b)
with platform.blas_threads_for(platform.SINGLE_THREAD_MATMUL):
    seen.append(get_threads())
    default_threads = np.array(a @ b)
seen.append(get_threads())
print(*seen, np.array_equal(one_thread, default_threads))
"""


def test_small_matrix_products_run_on_one_openblas_thread_with_the_same_results():
    library = platform.find_openblas()
    if library is None:
        pytest.skip("no OpenBLAS on this machine: .ci/run installs libopenblas0-pthread")
    env = {**os.environ, "LD_PRELOAD": library, "OPENBLAS_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", _THREADS_PROBE], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "1", "2", "2", "True"]


def test_blas_threads_for_is_a_no_op_without_openblas():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    probe = ("from mlx_distill import platform\n"
             "with platform.blas_threads_for(1):\n    print('ran')\n")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ran"]
