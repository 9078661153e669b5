"""Which macOS tools this machine has: caffeinate, pmset, osascript (none of them on Linux; vm_stat,
used for the memory free, is optional too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# "1": act as on macOS where the tools are on PATH (tests put fakes there); "0": never.
FORCE_MACOS = "MLX_DISTILL_MACOS"
TOOLS = ("caffeinate", "pmset", "osascript")
TOOL_TIMEOUT_SECONDS = 10.0


def is_macos() -> bool:
    """True on macOS, or where ``MLX_DISTILL_MACOS=1`` asks for the macOS behaviour."""
    forced = os.environ.get(FORCE_MACOS)
    if forced in ("0", "1"):
        return forced == "1"
    return sys.platform == "darwin"


def find_tool(name: str) -> str | None:
    """The path of a macOS tool on PATH, or None (not macOS, or not installed)."""
    return shutil.which(name) if is_macos() else None


def run_tool(args: list[str], timeout: float = TOOL_TIMEOUT_SECONDS) -> str | None:
    """A tool's standard output, or None when it is missing, fails or hangs."""
    tool = find_tool(args[0])
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, *args[1:]], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def missing_tools() -> list[str]:
    """The macOS tools not found here (all of them off macOS)."""
    return [name for name in TOOLS if find_tool(name) is None]
