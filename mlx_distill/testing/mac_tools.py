"""Recording fakes of the macOS tools ``caffeinate``, ``pmset`` and ``osascript``, for tests.

They exist only because those tools cannot run on the Linux test machine. Each is a small script
put on PATH that appends JSON lines (tool, pid, what happened, when) to ``records.jsonl``, so a
test can check what the app asked for and how long it held it. The fake caffeinate lives, as the
real one does, until it is signalled or until the ``-w`` process ends. The fake pmset prints the
power state the test set with ``set_power``. The app's real code paths run: only these tools are
fake, and ``MLX_DISTILL_MACOS=1`` (``env()``) asks for the macOS behaviour.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_distill.machine import power

_COMMON = '''#!{python}
import json, os, signal, sys, time
FOLDER = {folder!r}


def record(event, **fields):
    line = json.dumps({{"tool": {tool!r}, "pid": os.getpid(), "event": event, "time": time.time(), **fields}})
    with open(os.path.join(FOLDER, "records.jsonl"), "a") as log:
        log.write(line + "\\n")


'''

# A shell script, not Python: it must record its start in the milliseconds before a fast run
# (one that fails at once) lets it go, as the real, native caffeinate would have started by then.
_CAFFEINATE = r'''#!/bin/sh
log="{folder}/records.jsonl"
now() {{ perl -MTime::HiRes=time -e 'printf "%.6f", time'; }}
ended() {{
    echo "{{\"tool\": \"caffeinate\", \"pid\": $$, \"event\": \"end\", \"time\": $(now), \"reason\": \"$1\"}}" >> "$log"
    exit 0
}}
# A signal before the start is written (a run that fails at once, on a loaded machine) is kept
# until it is, so every end has its start.
pending=""
trap 'pending=1' TERM INT HUP
args=""
for arg in "$@"; do args="$args${{args:+, }}\"$arg\""; done
echo "{{\"tool\": \"caffeinate\", \"pid\": $$, \"event\": \"start\", \"time\": $(now), \"args\": [$args]}}" >> "$log"
trap 'ended "signal"' TERM INT HUP
[ -z "$pending" ] || ended "signal"
watched=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-w" ]; then watched="$2"; fi
    shift
done
# With -w it lives until that process ends; an ended process not reaped yet (a zombie) counts as
# ended, as for the real one.
alive() {{
    kill -0 "$watched" 2>/dev/null || return 1
    [ -r "/proc/$watched/stat" ] || return 0
    read -r stat < "/proc/$watched/stat"
    state="${{stat##*) }}"
    [ "${{state%% *}}" != "Z" ]
}}
while [ -z "$watched" ] || alive; do sleep 0.05; done
ended "watched process ended"
'''

_PMSET = '''record("call", args=sys.argv[1:])
if sys.argv[1:] != ["-g", "batt"]:
    sys.exit(1)
with open(os.path.join(FOLDER, "power.txt")) as state:
    sys.stdout.write(state.read())
'''

_OSASCRIPT = '''record("call", args=sys.argv[1:])
'''

AC_POWER = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=4653155)\t{percent}%; charging; 1:05 remaining present: true\n"
BATTERY_POWER = ("Now drawing from 'Battery Power'\n -InternalBattery-0 (id=4653155)\t{percent}%; discharging; "
                 "2:10 remaining present: true\n")
DESKTOP = "Now drawing from 'AC Power'\n"


@dataclass
class FakeMacTools:
    """A folder with fake ``caffeinate``, ``pmset`` and ``osascript``; see the module docstring."""

    folder: Path

    @classmethod
    def install(cls, folder: Path) -> "FakeMacTools":
        folder.mkdir(parents=True, exist_ok=True)
        for tool, body in (("pmset", _PMSET), ("osascript", _OSASCRIPT)):
            (folder / tool).write_text(_COMMON.format(python=sys.executable, folder=str(folder), tool=tool) + body)
        (folder / "caffeinate").write_text(_CAFFEINATE.format(folder=str(folder)))
        for tool in ("caffeinate", "pmset", "osascript"):
            (folder / tool).chmod(0o755)
        fake = cls(folder)
        fake.set_power(on_battery=False, percent=100)
        return fake

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment variables that put the fakes first on PATH and ask for macOS behaviour."""
        base = dict(os.environ if base is None else base)
        return {**base, "PATH": f"{self.folder}{os.pathsep}{base.get('PATH', '')}", "MLX_DISTILL_MACOS": "1"}

    def activate(self, monkeypatch: Any, paused_poll_seconds: float = 0.05) -> "FakeMacTools":
        """Put the fakes on this process's PATH (with pytest's ``monkeypatch``, undone after the
        test), ask for the macOS behaviour, and make a paused run look again every 50 ms."""
        for key, value in self.env().items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        monkeypatch.setattr(power, "PAUSED_POLL_SECONDS", paused_poll_seconds)
        return self

    def set_power(self, *, on_battery: bool, percent: int | None) -> None:
        """What the fake ``pmset -g batt`` reports from now on (``percent`` None: a desktop Mac)."""
        if percent is None:
            text = DESKTOP
        else:
            text = (BATTERY_POWER if on_battery else AC_POWER).format(percent=percent)
        temp = self.folder / "power.txt.tmp"
        temp.write_text(text)
        temp.replace(self.folder / "power.txt")

    def records(self, tool: str | None = None) -> list[dict[str, Any]]:
        path = self.folder / "records.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in lines if tool is None or r["tool"] == tool]

    def assertions(self) -> list[dict[str, Any]]:
        """One entry per fake caffeinate run: its pid, args, start and end time (None: still held)."""
        spans: dict[int, dict[str, Any]] = {}
        for record in self.records("caffeinate"):
            if record["event"] == "start":
                spans[record["pid"]] = {"pid": record["pid"], "args": record["args"], "start": record["time"],
                                        "end": None}
            elif record["pid"] in spans:
                spans[record["pid"]]["end"] = record["time"]
                spans[record["pid"]]["reason"] = record.get("reason", "")
        return sorted(spans.values(), key=lambda s: s["start"])

    def notifications(self) -> list[str]:
        """The AppleScript of every fake osascript call, in order."""
        return [" ".join(r["args"]) for r in self.records("osascript")]
