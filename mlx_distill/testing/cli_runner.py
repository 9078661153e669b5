"""Run `mlx-distill` in tests: in-process (fast) or as a real process, and check one-line errors.

``run_cli`` calls ``mlx_distill.cli.main`` in this process (the console script's code path, without
a Python start-up per case); ``run_cli_process`` runs ``python -m mlx_distill`` where the process
boundary matters (signals, exit codes of a real process, stdin).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from mlx_distill import cli

ROOT = Path(__file__).resolve().parents[2]  # the source checkout the tests run from
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str | Path) -> CliResult:
    """``mlx-distill ARGS`` in this process; an exception that escapes the CLI becomes a traceback
    in ``stderr`` and return code 1, as the console script would show it."""
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("MLX_DISTILL_NO_BLAS_REEXEC")
    os.environ["MLX_DISTILL_NO_BLAS_REEXEC"] = "1"  # never re-exec the test process
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            except Exception:  # an escaped exception is what the test must catch, shown as a traceback
                err.write(traceback.format_exc())
                code = 1
    finally:
        if saved is None:
            os.environ.pop("MLX_DISTILL_NO_BLAS_REEXEC", None)
        else:
            os.environ["MLX_DISTILL_NO_BLAS_REEXEC"] = saved
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str | Path, timeout: float = 120) -> CliResult:
    """``python -m mlx_distill ARGS`` in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    done = subprocess.run([sys.executable, "-m", "mlx_distill", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: CliResult, *words: str) -> str:
    """Exit code 2, no traceback anywhere, exactly one stderr line starting ``error: `` holding
    every word (case-insensitive); returns that line."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode == 2, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: "), shown
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in: {lines[0]}"
    return lines[0]


def files_under(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative), to check that nothing was left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
