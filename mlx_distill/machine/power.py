"""Battery charge from ``pmset -g batt``, and a run that waits between batches while it is low."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from mlx_distill.events import OnEvent, Paused, Resumed, ShouldStop
from mlx_distill.machine.tools import run_tool

# A file the user (or the TUI's resume key) creates in the run folder to go on while on battery.
CONTINUE_FILE = "continue"
# How often a working run asks pmset (a stage polls should_stop many times a second).
BATTERY_CHECK_SECONDS = 30.0
# How often a paused run looks again at the power, the continue file and a stop request.
PAUSED_POLL_SECONDS = 2.0

_SOURCE = re.compile(r"Now drawing from '([^']+)'")
_INTERNAL_BATTERY = re.compile(r"-InternalBattery-\d+.*?\b(\d{1,3})%")


@dataclass(frozen=True)
class PowerStatus:
    """What ``pmset -g batt`` says: the power source and the internal battery's charge."""

    source: str  # "AC Power", "Battery Power" or "UPS Power"
    percent: int | None  # None: no internal battery (a desktop Mac)

    @property
    def on_battery(self) -> bool:
        return self.source == "Battery Power" and self.percent is not None

    def describe(self) -> str:
        if self.percent is None:
            return f"{self.source}, no battery"
        return f"on battery, {self.percent}%" if self.on_battery else f"{self.source}, battery {self.percent}%"


def parse_pmset_batt(text: str) -> PowerStatus | None:
    """Read ``pmset -g batt`` output; None when it is not in that form."""
    source = _SOURCE.search(text)
    if source is None:
        return None
    battery = _INTERNAL_BATTERY.search(text)
    return PowerStatus(source.group(1), int(battery.group(1)) if battery else None)


def power_status() -> PowerStatus | None:
    """This Mac's power source and charge, or None (not macOS, no pmset, or unreadable)."""
    output = run_tool(["pmset", "-g", "batt"])
    return parse_pmset_batt(output) if output is not None else None


class BatteryPause:
    """Wraps a stage's ``should_stop``: on battery below ``threshold`` percent the call blocks (the
    stage waits between batches) until power returns, the user creates ``continue_file`` or asks
    to stop. Says so with a Paused and a Resumed event. ``threshold`` 0 never pauses; a Mac without
    a battery (or a machine without pmset) never pauses.
    """

    def __init__(self, threshold: int, continue_file: Path | None, emit: OnEvent) -> None:
        self.threshold = threshold
        self.continue_file = continue_file
        self.emit = emit
        self._next_check = 0.0
        self._user_said_go_on = False
        if continue_file is not None:
            continue_file.unlink(missing_ok=True)  # a word from an earlier run is not for this one

    def wrap(self, should_stop: ShouldStop) -> ShouldStop:
        if self.threshold <= 0:
            return should_stop

        def paused_or_stop() -> bool:
            self._wait_while_low(should_stop)
            return should_stop()

        return paused_or_stop

    def _low(self) -> PowerStatus | None:
        status = power_status()
        if status is not None and status.on_battery and status.percent < self.threshold:
            return status
        return None

    def _continue_asked(self) -> bool:
        if self.continue_file is None or not self.continue_file.exists():
            return False
        self.continue_file.unlink(missing_ok=True)
        return True

    def _wait_while_low(self, should_stop: ShouldStop) -> None:
        now = time.monotonic()
        if self._user_said_go_on or now < self._next_check:
            return
        self._next_check = now + BATTERY_CHECK_SECONDS
        low = self._low()
        if low is None:
            return
        how = f"plug in the charger, or create {self.continue_file} to go on" if self.continue_file else \
            "plug in the charger to go on"
        self.emit(Paused(message=f"paused: on battery at {low.percent}% (below {self.threshold}%); {how}",
                         level="warning", battery_percent=low.percent))
        while True:
            time.sleep(PAUSED_POLL_SECONDS)
            if should_stop():
                return  # the stage stops; no Resumed
            if self._continue_asked():
                self._user_said_go_on = True
                self.emit(Resumed(message="going on while on battery, as asked; no more pauses in this run",
                                  reason="user"))
                return
            status = power_status()
            if status is None or not status.on_battery:
                source = status.source if status else "power state unknown"
                self.emit(Resumed(message=f"resumed: {source}", reason="power"))
                self._next_check = time.monotonic() + BATTERY_CHECK_SECONDS
                return
