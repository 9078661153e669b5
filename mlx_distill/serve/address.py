"""Where a run's servers listen: one ``servers/<pid>.json`` record per `mlx-distill serve` of the run.

The TUI reads them to show an address; a record left by a killed server names a dead pid and is
ignored. Each server writes and removes only its own record, so stopping one of two servers of a
run leaves the other's.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from mlx_distill.files import write_json_atomic

SERVERS_FOLDER = "servers"


def serve_command(run_dir: str | Path) -> str:
    """The shell command that serves a run's student."""
    return f"mlx-distill serve {run_dir}"


def write_server_address(run_dir: Path, url: str, pid: int | None = None) -> Path:
    """Record that process ``pid`` (default: this one) serves ``run_dir``'s student at ``url``."""
    pid = os.getpid() if pid is None else pid
    folder = Path(run_dir) / SERVERS_FOLDER
    folder.mkdir(exist_ok=True)
    path = folder / f"{pid}.json"
    write_json_atomic(path, {"url": url, "pid": pid})
    return path


def remove_server_address(path: Path) -> None:
    """Forget a record written by `write_server_address`."""
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when no other server of the run is left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # alive, owned by another user (or not a pid at all)
    return True


def server_addresses(run_dir: str | Path) -> list[str]:
    """The URLs of the live servers of ``run_dir``'s student, newest first."""
    records = []
    for path in (Path(run_dir) / SERVERS_FOLDER).glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, url, when = int(record["pid"]), str(record["url"]), path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if _alive(pid):
            records.append((when, url))
    return [url for _, url in sorted(records, reverse=True)]


def server_address(run_dir: str | Path) -> str | None:
    """The URL of a live server of ``run_dir``'s student (the newest), or None when none runs."""
    urls = server_addresses(run_dir)
    return urls[0] if urls else None
