"""Where a run's server listens: ``server.json`` in the run folder while `mlx-distill serve` runs.

The TUI reads it to show the address; a file left by a killed server names a dead pid and is
ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from mlx_distill.files import write_json_atomic

SERVER_FILE = "server.json"


def serve_command(run_dir: str | Path) -> str:
    """The shell command that serves a run's student."""
    return f"mlx-distill serve {run_dir}"


def write_server_address(run_dir: Path, url: str) -> Path:
    """Record that this process serves ``run_dir``'s student at ``url``."""
    path = Path(run_dir) / SERVER_FILE
    write_json_atomic(path, {"url": url, "pid": os.getpid()})
    return path


def remove_server_address(path: Path) -> None:
    """Forget the record, if it is still this process's."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def server_address(run_dir: str | Path) -> str | None:
    """The URL of the live server of ``run_dir``'s student, or None when none runs."""
    try:
        record = json.loads((Path(run_dir) / SERVER_FILE).read_text(encoding="utf-8"))
        pid, url = int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return url
