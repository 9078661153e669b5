"""Writing files so that a crash or a kill never leaves half of one, and one writer at a time.

- ``write_text_atomic`` / ``write_json_atomic``: a temp file in the same folder, fsync, rename,
  fsync of the folder. A reader sees the old content or the new, never a mix.
- ``publish_dir``: put a finished folder in place of an old one (the old one is gone only after);
  with a ``kind``, only in place of nothing or of an earlier folder of that kind (a marker file
  says so), never over a user's folder (``check_publish_target`` says so before any work).
- ``append_jsonl`` / ``JsonlWriter``: append-only JSONL. A torn last line (a writer killed
  mid-line) is healed before the next record, so it never glues to it.
- ``read_jsonl_lines``: the whole lines of a JSONL file; a torn tail is left out.
- ``exclusive_lock``: an OS lock (``fcntl.flock``) on a lock file, released by the kernel when the
  process dies; a second writer gets a one-line error naming the pid that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from mlx_distill.errors import DistillError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write a whole file: readers see the old or the new content, never half of it."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: list[dict[str, Any]]) -> None:
    """A whole JSONL file at once (one object a line)."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# A published folder of a ``kind`` holds this file (hidden: a push leaves it out).
FOLDER_MARKER = ".mlx-distill-folder"


def folder_kind(folder: str | Path) -> str | None:
    """The ``kind`` a folder was published with (``publish_dir(kind=...)``), or None."""
    try:
        data = json.loads((Path(folder) / FOLDER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def check_publish_target(final: str | Path, kind: str, what: str,
                         accept: Callable[[Path], bool] | None = None) -> Path:
    """Where ``publish_dir(kind=kind)`` may put a folder: a path that does not exist yet, or an
    earlier folder of the same ``kind`` (its marker file says so), which it replaces.

    Args:
        final: The folder to publish.
        kind: What is published, e.g. ``"student export"``.
        what: How the error names the path, e.g. ``"--out"``.
        accept: Also replace an unmarked existing folder this says yes to (one written before
            folders were marked, in a place the caller owns).

    Returns:
        The absolute path (``.`` and ``..`` resolved, a link kept as the link).

    Raises:
        DistillError: one line naming the path and the fix: a folder that is not an earlier one
        of this kind (a user's, the run's own, the current folder), a file, a link, a system tree
        such as /proc or /dev, a parent that is a file, no permission.
    """
    path = Path(final).expanduser()
    _refuse_system_tree(path, what)
    absolute = Path(os.path.abspath(path))
    if absolute.is_symlink():
        raise DistillError(f"{what} {path} is a link; give a new folder name (nothing was written)")
    if absolute.exists():
        if not absolute.is_dir():
            raise DistillError(f"{what} {path} is a file; give a new folder name (nothing was written)")
        if folder_kind(absolute) == kind or (accept is not None and accept(absolute)):
            return absolute
        raise DistillError(f"{what} {path} is a folder that is not an earlier {kind}, so it is not replaced; "
                           "give a new folder name (nothing was written)")
    for parent in absolute.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DistillError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise DistillError(f"cannot write {what} {path}: permission denied; choose another path")
            break
    return absolute


def publish_dir(temp: Path, final: Path, *, kind: str | None = None, what: str = "folder",
                accept: Callable[[Path], bool] | None = None) -> Path:
    """Move a finished folder ``temp`` to ``final``, replacing what was there; return ``final``.

    The old folder is first renamed aside and deleted only after the new one is in place, so a
    kill at any moment leaves either the old folder or the new one under ``final`` (or, for a
    moment, the old one beside it as ``.<name>.old``, which the next publish removes).

    Without ``kind`` the caller owns ``final``'s place (a run's own subfolder, a cache entry).
    With ``kind`` (for a path a user gave), ``temp`` is marked with it and ``final`` must pass
    ``check_publish_target`` (checked again here, just before replacing).

    Raises:
        DistillError: with ``kind``, a ``final`` that is not new nor an earlier folder of that kind.
    """
    temp, final = Path(temp), Path(final)
    if kind is not None:
        final = check_publish_target(final, kind, what, accept)
        write_json_atomic(temp / FOLDER_MARKER, {"kind": kind})
    old = final.with_name(f".{final.name}.old")
    if old.exists() and (kind is None or folder_kind(old) == kind):
        shutil.rmtree(old, ignore_errors=True)
    if old.exists() or old.is_symlink():  # not ours to delete: step aside under another name
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        old.rmdir()
    if final.exists():
        os.replace(final, old)
    os.replace(temp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _heal_torn_tail(handle) -> None:
    """If the file does not end in a newline (a killed writer), end that line first."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) != b"\n":
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n")


class JsonlWriter:
    """Appends JSON records to a file, one a line; ``durable`` fsyncs after each ``write``."""

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable
        self.handle = open(self.path, "a+b")
        _heal_torn_tail(self.handle)
        self.handle.seek(0, os.SEEK_END)

    def write_lines(self, lines: list[str]) -> None:
        """Append already-encoded JSON lines (without their newlines)."""
        if not lines:
            return
        self.handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
        self.handle.flush()
        if self.durable:
            os.fsync(self.handle.fileno())

    def write(self, record: dict[str, Any]) -> None:
        self.write_lines([json.dumps(record, ensure_ascii=False)])

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record (healing a torn last line first)."""
    with JsonlWriter(path) as writer:
        writer.write(record)


def complete_lines(data: bytes) -> bytes:
    """The whole lines of a JSONL file's bytes (a torn last line cut off)."""
    return data[: data.rfind(b"\n") + 1]


def read_jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each whole, non-blank line; a torn last line is left out.

    A missing file has no lines. Callers parse the lines and decide what a bad one means.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return
    for number, line in enumerate(complete_lines(data).decode("utf-8", errors="replace").split("\n"), start=1):
        if line.strip():
            yield number, line


def read_jsonl_records(path: str | Path) -> list[dict[str, Any]]:
    """Every whole line that is a JSON object (others skipped): for logs a crash may have cut."""
    records = []
    for _, line in read_jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def lock_holder(lock_path: str | Path) -> int | None:
    """The pid of the live process holding ``lock_path``'s lock, or None when it is free."""
    lock_path = Path(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(lock_path) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive OS lock on ``lock_path`` while writing ``what``.

    The kernel releases the lock when the process dies, so a killed writer never blocks the next
    one. The lock file holds the owner's pid, as information only.

    Raises:
        DistillError: another live process holds the lock (its pid is named).
    """
    lock_path = Path(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise DistillError(f"cannot create lock file {lock_path}: {reason}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(lock_path)
            holder = f"pid {pid}" if pid else "another process"
            stop = f"; wait for it or stop it with kill -INT {pid}" if pid else "; wait for it to finish"
            raise DistillError(f"{what} is already being written by {holder}{stop}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_path_for(path: str | Path) -> Path:
    """The lock file that guards an output file or folder: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


_SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))


def _refuse_system_tree(path: Path, what: str) -> None:
    resolved = path.resolve()
    for tree in _SYSTEM_TREES:
        if resolved == tree or tree in resolved.parents:
            raise DistillError(f"{what} {path} is under {tree}, which holds no files of ours; choose a folder of yours")


def _reason(error: OSError) -> str:
    return "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error)).lower()


def prepare_output_dir(path: str | Path, what: str) -> Path:
    """Make sure ``path`` is (or can become) a writable folder, before any work is done.

    Raises:
        DistillError: one line naming ``what``, the path and why (a file is in the way, a parent is
        a file, no permission, a system tree such as /proc).
    """
    path = Path(path)
    _refuse_system_tree(path, what)
    if path.exists() and not path.is_dir():
        raise DistillError(f"{what} {path} is a file; give a folder (a new or an existing one)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise DistillError(f"cannot write {what} {path}: {_reason(error)}; choose another folder") from None
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Make sure a file can be written at ``path`` (its folder is made), before any work is done.

    Raises:
        DistillError: one line naming ``what`` and the path: a folder in the way, a parent that is a
        file, a system tree such as /proc, no permission.
    """
    path = Path(path)
    _refuse_system_tree(path, what)
    if path.is_dir():
        raise DistillError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.jsonl'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DistillError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DistillError(f"cannot write {what} {path}: {_reason(error)}; choose another path") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DistillError(f"cannot write {what} {path}: permission denied; choose another path")
    return path


def cut_torn_tail(path: str | Path) -> None:
    """Drop the half line a killed writer left at the end of a JSONL file.

    For a file whose every line must parse (a rationale cache): healing the line with a newline
    would leave a bad line in the middle; a cache may only lose its torn tail.
    """
    with open(path, "r+b") as handle:
        data = handle.read()
        whole = len(complete_lines(data))
        if whole < len(data):
            handle.truncate(whole)
            handle.flush()
            os.fsync(handle.fileno())
