"""A word when a run ends, fails or pauses: a macOS notification (osascript) and the terminal bell."""

from __future__ import annotations

import sys
from typing import TextIO

from mlx_distill.machine.tools import find_tool, run_tool

APP_TITLE = "mlx-distill"


def _applescript_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def notification_available() -> bool:
    return find_tool("osascript") is not None


def notify(message: str, *, subtitle: str = "", bell: TextIO | None = None) -> None:
    """Show a desktop notification (macOS, where osascript is found) and ring the bell on ``bell``
    (default: stderr) when it is a terminal. Never raises."""
    script = f"display notification {_applescript_text(message)} with title {_applescript_text(APP_TITLE)}"
    if subtitle:
        script += f" subtitle {_applescript_text(subtitle)}"
    run_tool(["osascript", "-e", script])
    stream = sys.stderr if bell is None else bell
    try:
        if stream.isatty():
            stream.write("\a")
            stream.flush()
    except (OSError, ValueError):  # a closed stream: nothing to ring
        pass
