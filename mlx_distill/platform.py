"""Machine facts: which BLAS MLX uses on Linux, how much memory there is, what device runs MLX."""

from __future__ import annotations

import ctypes
import os
import platform as _platform
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

# Set by us on the re-exec so a failed preload cannot loop.
REEXEC_MARKER = "MLX_DISTILL_BLAS_REEXEC"
# Users set this to keep the slow BLAS (or to debug the re-exec).
OPT_OUT = "MLX_DISTILL_NO_BLAS_REEXEC"
# Users (and tests) point this at an OpenBLAS libblas.so.3 in a non-Debian place.
OPENBLAS_OVERRIDE = "MLX_DISTILL_OPENBLAS"

OPENBLAS_FIX = "sudo apt-get install -y libopenblas0-pthread"

_OPENBLAS_CANDIDATES = (
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/{arch}-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


@dataclass(frozen=True)
class BlasStatus:
    """What BLAS the MLX CPU backend runs its matmuls with in this process."""

    fast: bool
    library: str
    detail: str


def _loaded_libraries() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in lines if ".so" in line})


def blas_status() -> BlasStatus:
    """Tell whether MLX's CPU matmuls run on an optimised BLAS in this process.

    On macOS MLX uses Accelerate (or Metal). On Linux the ``mlx[cpu]`` wheel bundles the
    reference BLAS (about 25x slower here) unless an OpenBLAS is preloaded.
    """
    if sys.platform != "linux":
        return BlasStatus(True, "Accelerate/Metal", "not Linux: MLX uses Apple's libraries")
    import mlx.core  # noqa: F401  (loads libmlx and its bundled BLAS)

    libraries = _loaded_libraries()
    # numpy's wheel bundles its own OpenBLAS (numpy.libs/libscipy_openblas*): MLX does not use it.
    openblas = [lib for lib in libraries if "openblas" in lib and "numpy.libs" not in lib]
    if openblas:
        return BlasStatus(True, openblas[0], "OpenBLAS preloaded")
    bundled = [lib for lib in libraries if "mlx_cpu.libs" in lib and "libblas" in lib]
    if bundled:
        return BlasStatus(False, bundled[0], "the reference BLAS bundled with mlx[cpu]")
    return BlasStatus(True, "unknown", "no bundled reference BLAS found")


def find_openblas() -> str | None:
    """The path of an installed OpenBLAS ``libblas`` to preload, or None."""
    override = os.environ.get(OPENBLAS_OVERRIDE)
    if override:
        return override if Path(override).is_file() else None
    arch = _platform.machine()
    for pattern in _OPENBLAS_CANDIDATES:
        path = pattern.format(arch=arch)
        if Path(path).is_file():
            return path
    return None


# OpenBLAS's idle threads spin for ~2^28 cycles after each threaded call before they sleep. A server
# waits between steps and between requests, and its steps are many small matmuls: there the spinning
# burned ~0.5 of this 2-core machine's cores (benchmarks/serve_cpu.py). Read by OpenBLAS when it
# loads, so only the re-exec can set it; training keeps the default (its back-to-back matmuls were
# slower with it).
SERVING_BLAS_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def blas_environment(argv: list[str]) -> dict[str, str]:
    """What the command ``argv`` adds to the environment OpenBLAS loads with (never a variable the user set)."""
    if argv[:1] != ["serve"]:
        return {}
    return {key: value for key, value in SERVING_BLAS_ENV.items() if key not in os.environ}


# Below this many multiply-adds a matrix product ran faster on one OpenBLAS thread than on two on a
# 2-core machine (a student's decoding step at 16 rows, a one-question encoder pass: 0.5M-1.2M; from
# 8M on, two threads won). OpenBLAS goes multithreaded from 0.26M on.
SINGLE_THREAD_MATMUL = 1 << 22


@dataclass(frozen=True)
class _OpenBlasThreads:
    get_threads: Callable[[], int]
    set_threads: Callable[[int], None]
    default: int


@lru_cache(maxsize=1)
def _openblas_threads() -> _OpenBlasThreads | None:
    """The thread control of the OpenBLAS loaded into this process for MLX (preloaded), if there is one."""
    try:
        library = ctypes.CDLL(None)
        get_threads, set_threads = library.openblas_get_num_threads, library.openblas_set_num_threads
    except (OSError, AttributeError):
        return None
    get_threads.restype, set_threads.argtypes = ctypes.c_int, [ctypes.c_int]
    return _OpenBlasThreads(get_threads, set_threads, int(get_threads()))


def set_blas_threads_for(multiply_adds: int) -> None:
    """Set OpenBLAS to one thread when the coming work's largest matrix product has fewer than
    `SINGLE_THREAD_MATMUL` multiply-adds (OpenBLAS's own threshold is far lower), to its default
    otherwise. For work evaluated asynchronously (`mlx.core.async_eval`): the count in force when a
    product runs is the one used.

    OpenBLAS splits a product by rows and columns, never along the sums, so results are the same to
    the bit either way. Process-wide: concurrent users can only cost each other speed. A no-op
    without OpenBLAS (macOS, the bundled reference BLAS).
    """
    threads = _openblas_threads()
    if threads is None or threads.default == 1:
        return
    wanted = 1 if multiply_adds < SINGLE_THREAD_MATMUL else threads.default
    if threads.get_threads() != wanted:
        threads.set_threads(wanted)


@contextmanager
def blas_threads_for(multiply_adds: int) -> Iterator[None]:
    """Evaluate MLX work inside with `set_blas_threads_for` ``multiply_adds``; the count in force
    before is restored after."""
    threads = _openblas_threads()
    if threads is None or threads.default == 1:
        yield
        return
    before = threads.get_threads()
    set_blas_threads_for(multiply_adds)
    try:
        yield
    finally:
        threads.set_threads(before)


def ensure_fast_blas(argv: list[str] | None = None) -> None:
    """On Linux, re-exec once with OpenBLAS preloaded (and `blas_environment`), or print how to install it.

    Call at CLI start-up, before any heavy work. ``MLX_DISTILL_NO_BLAS_REEXEC=1`` opts out.
    """
    if sys.platform != "linux" or os.environ.get(OPT_OUT) == "1":
        return
    args = sys.argv[1:] if argv is None else argv
    extra = blas_environment(args)
    status = blas_status()
    if status.fast:
        if extra and os.environ.get(REEXEC_MARKER) != "1":
            _reexec(args, {**extra, REEXEC_MARKER: "1"})
        return
    library = find_openblas()
    if library is None:
        print(
            "warning: MLX is using the slow reference BLAS (about 25x slower matmuls); "
            f"fix: {OPENBLAS_FIX}",
            file=sys.stderr,
        )
        return
    if os.environ.get(REEXEC_MARKER) == "1":
        print(
            f"warning: preloading {library} did not replace MLX's reference BLAS; "
            f"set {OPT_OUT}=1 to silence this",
            file=sys.stderr,
        )
        return
    preload = ":".join(p for p in (library, os.environ.get("LD_PRELOAD", "")) if p)
    _reexec(args, {**extra, REEXEC_MARKER: "1", "LD_PRELOAD": preload})


def _reexec(args: list[str], changes: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mlx_distill", *args], {**os.environ, **changes})


def total_memory_bytes() -> int:
    """The memory MLX can use: unified memory on a Mac, physical RAM elsewhere."""
    import mlx.core as mx

    if sys.platform == "darwin":
        try:
            info = mx.device_info()
            size = info.get("memory_size") or info.get("max_recommended_working_set_size")
            if size:
                return int(size)
        except Exception:  # noqa: BLE001 - older MLX without device_info
            pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory_bytes() -> int:
    """Memory free for a new model now (Linux: MemAvailable; macOS: total unified memory)."""
    if sys.platform == "linux":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return total_memory_bytes()


def device_name() -> str:
    """A short description of the MLX device, e.g. ``cpu (x86_64, 2 cores)``."""
    import mlx.core as mx

    device = mx.default_device()
    kind = "gpu" if device.type == mx.DeviceType.gpu else "cpu"
    return f"{kind} ({_platform.machine()}, {os.cpu_count()} cores)"


def is_apple_gpu() -> bool:
    """True where MLX runs on Metal (Apple silicon), False on a CPU-only backend."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.gpu


def format_bytes(n: float) -> str:
    """``1.2 GB``-style text for a byte count (decimal units, as Macs show memory)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
