"""``mlx-distill run CONFIG --hosts hosts.json``: the same run started on every host by ``mlx.launch``.

MLX's launcher does the work (ssh to each host, ring or JACCL backend, ranks); this module only
builds its command line, starts it, and collects the events that ranks > 0 print (prefixed JSON
lines on stdout) into rank 0's ``events.jsonl`` so the TUI and ``progress`` see every rank.
Run it on the host listed first in hosts.json (rank 0 writes the run folder there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlx_distill.distributed.collectives import RELAY_ENV, RELAY_PREFIX
from mlx_distill.errors import DistillError
from mlx_distill.events import ShouldStop, never_stop
from mlx_distill.files import JsonlWriter, lock_holder

# How often the launcher checks for a stop request while mlx.launch runs.
POLL_SECONDS = 0.1


def launcher_path() -> str:
    """The ``mlx.launch`` executable beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mlx.launch")
    if beside.exists():
        return str(beside)
    found = shutil.which("mlx.launch")
    if found is None:
        raise DistillError("mlx.launch not found; install mlx (pip install mlx) in this environment")
    return found


def read_hostfile(path: str | Path) -> dict:
    """Check a hosts.json (mlx.launch's format) and return it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DistillError(f"hosts file {path} not found; see docs/multi-mac.md for its format") from None
    except json.JSONDecodeError as error:
        raise DistillError(f"hosts file {path} is not JSON ({error}); see docs/multi-mac.md") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, dict) and h.get("ssh") for h in hosts):
        raise DistillError(f"hosts file {path} needs a list of hosts, each with an \"ssh\" name; see docs/multi-mac.md")
    return {"hosts": hosts, "backend": data.get("backend", "") if isinstance(data, dict) else ""}


def launch_command(hostfile: str | Path, run_args: list[str], *, backend: str | None = None,
                   python: str | None = None) -> list[str]:
    """The ``mlx.launch`` command that runs ``python -m mlx_distill run <run_args>`` on every host."""
    info = read_hostfile(hostfile)
    command = [launcher_path(), "--hostfile", str(Path(hostfile).resolve())]
    chosen = backend or info["backend"] or "ring"
    command += ["--backend", chosen, "--env", f"{RELAY_ENV}=1"]
    if os.environ.get("LD_PRELOAD"):  # keep a preloaded BLAS (Linux) on every rank
        command += ["--env", f"LD_PRELOAD={os.environ['LD_PRELOAD']}"]
    command += ["--cwd", os.getcwd(), "--", python or sys.executable, "-m", "mlx_distill", "run", *run_args]
    return command


def _relay(stdout, events_path: Path) -> None:
    """Copy the launcher's output to ours; ranks' event lines go into rank 0's events.jsonl instead."""
    writer: JsonlWriter | None = None
    try:
        for line in stdout:
            if line.startswith(RELAY_PREFIX) and (writer is not None or events_path.parent.is_dir()):
                writer = writer or JsonlWriter(events_path)
                writer.write_lines([line[len(RELAY_PREFIX):].rstrip("\n")])
                continue
            sys.stdout.write(line)
            sys.stdout.flush()
    finally:
        if writer is not None:
            writer.close()


def run_launched(command: list[str], events_path: Path, should_stop: ShouldStop = never_stop) -> int:
    """Run ``command`` (mlx.launch); relay ranks' event lines into ``events_path``; return its exit code.

    When ``should_stop`` turns true, rank 0 (the pid holding the run folder's lock) gets SIGINT,
    so the run stops cleanly on every rank; a KeyboardInterrupt ends the launcher at once.
    """
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1)
    relay = threading.Thread(target=_relay, args=(process.stdout, events_path), daemon=True)
    relay.start()
    forwarded = False
    try:
        while process.poll() is None:
            if should_stop() and not forwarded:
                forwarded = True
                pid = lock_holder(events_path.parent / "pid")
                if pid is not None and pid > 0:
                    os.kill(pid, signal.SIGINT)
                else:
                    process.terminate()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    relay.join()
    return process.returncode
