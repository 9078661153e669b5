"""The converted GGUF teachers in the user cache, one folder per file and scale dtype.

A folder is found without reading the whole file: it is keyed by the file's size, modification
time and header bytes (an Ollama blob by the SHA-256 its name already is). The full SHA-256 is
computed once, during the conversion, and recorded in the folder's config. A folder is used only
when it is whole (every file its config lists, at its recorded size); anything else is converted
again, never half-used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import mlx.core as mx

from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event
from mlx_distill.files import exclusive_lock, lock_path_for, publish_dir
from mlx_distill.platform import format_bytes
from mlx_distill.teacher.gguf.convert import CONVERTER_VERSION, convert_gguf, types_text
from mlx_distill.teacher.gguf.header import GGUFHeader
from mlx_distill.teacher.gguf.sources import cache_root, check_gguf

# How long a second process waits for another one converting the same file.
LOCK_WAIT_SECONDS = 1800
_OLLAMA_BLOB_NAME_LENGTH = len("sha256-") + 64


def file_sha256(path: Path) -> str:
    if path.name.startswith("sha256-") and len(path.name) == _OLLAMA_BLOB_NAME_LENGTH:
        return path.name.removeprefix("sha256-")  # an Ollama blob is named by its hash
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(header: GGUFHeader) -> str:
    """Size, modification time and header bytes of the file (no weight is read)."""
    path = Path(header.path)
    if path.name.startswith("sha256-") and len(path.name) == _OLLAMA_BLOB_NAME_LENGTH:
        return path.name.removeprefix("sha256-")[:20]
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(header.data_offset))
    return digest.hexdigest()[:20]


def folder_problem(folder: Path) -> str:
    """Why a cache folder cannot be used ("" when it is whole)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        files = config["mlx_distill_gguf"]["files"]
        if config["mlx_distill_gguf"]["converter_version"] != CONVERTER_VERSION or not files:
            return "written by another version"
        for name, size in files.items():
            if (folder / name).stat().st_size != size:
                return f"{name} has the wrong size"
    except FileNotFoundError as error:
        return f"{Path(error.filename or '').name or 'a file'} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"its config is unreadable ({type(error).__name__})"
    return ""


def scale_dtype_for(to_float32: bool) -> mx.Dtype:
    return mx.float32 if to_float32 else mx.float16


def gguf_teacher_folder(teacher: str, on_event: OnEvent = ignore_event, *, to_float32: bool = True) -> Path:
    """The mlx-lm folder of a GGUF teacher, converted into the user cache on first use.

    Args:
        to_float32: The teacher will run in float32 (CPU path): scales and biases in float32;
            else float16 (a separate folder).

    The folder is written beside its final place, then published whole (``files.publish_dir``),
    under a lock: a failure or a kill leaves nothing half-written, and a second process
    converting the same file waits for the first.
    """
    header = check_gguf(teacher)
    scale_dtype = scale_dtype_for(to_float32)
    root = cache_root() / "gguf"
    final = root / f"{cache_key(header)}-{'f32' if to_float32 else 'f16'}-v{CONVERTER_VERSION}"
    if final.is_dir() and not folder_problem(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            with exclusive_lock(lock_path_for(final), f"GGUF conversion {final}"):
                problem = folder_problem(final) if final.exists() else ""
                if final.exists() and not problem:  # done by the process we waited for
                    return final
                if problem:
                    on_event(Log(f"the converted copy {final} is damaged ({problem}); converting again",
                                 level="warning"))
                _convert_into(header, final, scale_dtype, on_event)
                return final
        except DistillError as error:
            if "is already being written" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _convert_into(header: GGUFHeader, final: Path, scale_dtype: mx.Dtype, on_event: OnEvent) -> None:
    temp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    start = time.perf_counter()
    on_event(Log(f"converting {header.path.name} ({format_bytes(header.path.stat().st_size)}, "
                 f"{types_text(header)}) into an MLX model folder, once: {final}"))
    try:
        convert_gguf(header.path, temp, on_event, scale_dtype=scale_dtype, source_sha256=file_sha256(header.path))
        publish_dir(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    on_event(Log(f"converted {header.path.name} in {time.perf_counter() - start:.1f}s"))
