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
from pathlib import Path

from mlx_distill.distributed.collectives import RELAY_ENV, RELAY_PREFIX
from mlx_distill.errors import DistillError


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


def _append_event(events_path: Path, line: str) -> bool:
    if not events_path.parent.is_dir():
        return False
    # One write of a whole line in append mode: rank 0's own appends interleave by line, never mid-line.
    with open(events_path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return True


def run_launched(command: list[str], events_path: Path) -> int:
    """Run ``command`` (mlx.launch); relay ranks' event lines into ``events_path``; return its exit code.

    The first Ctrl-C (or SIGTERM) is passed to rank 0 as SIGINT through the run's pid file, so the
    run stops cleanly on every rank; a second one ends the launcher.
    """
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1)
    signals = {"count": 0}

    def forward(signum, frame):
        signals["count"] += 1
        if signals["count"] > 1:
            process.terminate()
            return
        try:
            os.kill(int((events_path.parent / "pid").read_text().split()[0]), signal.SIGINT)
        except (OSError, ValueError):
            process.terminate()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RELAY_PREFIX):
                if _append_event(events_path, line[len(RELAY_PREFIX):].rstrip("\n")):
                    continue
            sys.stdout.write(line)
            sys.stdout.flush()
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
