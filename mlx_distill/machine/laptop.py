"""The laptop side of one pipeline run: awake while a stage works, paused on a low battery, the
MLX memory limit, and a notification when the run ends, fails or pauses."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from mlx_distill.events import STAGES, Event, Failed, Finished, Log, OnEvent, Paused, Resumed, ShouldStop, StageStarted
from mlx_distill.machine.awake import KeepAwake
from mlx_distill.machine.memory import memory_limit, memory_plan
from mlx_distill.machine.notify import notify
from mlx_distill.machine.power import CONTINUE_FILE, BatteryPause


class LaptopRun:
    """Subscribes to a run's events (``on_event``) and wraps its ``should_stop`` (``wrap``).

    The sleep assertion is taken when the first stage starts, let go while paused on battery and
    when the run ends (or this process dies: see ``KeepAwake``). One notification per end.
    """

    def __init__(self, *, keep_awake: bool = True, pause_below_battery: int = 20, notify: bool = True,
                 memory_limit_gb: float = 0.0, continue_file: Path | None = None, run_name: str = "") -> None:
        self.awake = KeepAwake(enabled=keep_awake)
        self.pause_below_battery = pause_below_battery
        self.notify = notify
        self.memory_limit_gb = memory_limit_gb
        self.continue_file = continue_file
        self.run_name = run_name
        self._ended = False
        self._held_before_pause = False

    @classmethod
    def for_run(cls, settings: Any, run_dir: Path, run_name: str) -> "LaptopRun":
        """From a config's ``[run]`` section (``mlx_distill.config.RunSection``)."""
        return cls(keep_awake=settings.keep_awake, pause_below_battery=settings.pause_below_battery,
                   notify=settings.notify, memory_limit_gb=settings.memory_limit_gb,
                   continue_file=Path(run_dir) / CONTINUE_FILE, run_name=run_name)

    @contextlib.contextmanager
    def running(self, emit: OnEvent) -> Iterator["LaptopRun"]:
        """The run's span: MLX's memory limit set (and said) before any model loads; everything
        let go at the end, however it ends."""
        plan = memory_plan(self.memory_limit_gb)
        try:
            with memory_limit(plan):
                emit(Log(message=f"MLX memory limit {plan.describe()}; device {plan.device}"))
                yield self
        finally:
            self.awake.release()

    def wrap(self, should_stop: ShouldStop, emit: OnEvent) -> ShouldStop:
        return BatteryPause(self.pause_below_battery, self.continue_file, emit).wrap(should_stop)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StageStarted) and event.stage in STAGES:
            self.awake.hold()
        elif isinstance(event, Paused):
            self._held_before_pause = self.awake.held
            self.awake.release()  # a paused run lets the Mac sleep
            self._say(f"paused: on battery at {event.battery_percent}%; plug in the charger to go on")
        elif isinstance(event, Resumed) and self._held_before_pause:
            self.awake.hold()
        elif isinstance(event, Finished) and event.stage == "run":
            self._end("stopped; finished work is kept" if event.stopped else "finished")
        elif isinstance(event, Failed):
            self._end(f"failed in {event.stage}: {event.error}")

    def _end(self, how: str) -> None:
        self.awake.release()
        if not self._ended:
            self._ended = True
            self._say(f"run {self.run_name} {how}" if self.run_name else f"run {how}")

    def _say(self, message: str) -> None:
        if self.notify:
            notify(message, subtitle=self.run_name)
