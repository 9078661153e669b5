"""One standalone stage (``mlx-distill generate``, ``mlx-distill train``) with the laptop care a
whole run gets (``LaptopRun``): awake while it works, paused on a low battery, MLX's memory limit,
one notification when it ends, fails or pauses."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from mlx_distill.events import Event, Failed, Finished, OnEvent, ShouldStop, StageStarted, fan_out
from mlx_distill.machine.laptop import LaptopRun


@contextlib.contextmanager
def laptop_stage(settings: Any, stage: str, name: str, continue_file: Path | None, on_event: OnEvent,
                 should_stop: ShouldStop) -> Iterator[tuple[OnEvent, ShouldStop]]:
    """The stage's span, as ``LaptopRun.running``: yields the ``on_event`` and ``should_stop`` to
    give the stage (battery pause wrapped in). ``settings`` is a config's ``[run]`` section
    (``mlx_distill.config.RunSection``); ``continue_file`` lets the user go on while on battery.

    The stage counts as stopped when ``should_stop`` says so once the block ends. The end goes to
    the laptop side only: the command itself prints how the stage ended.
    """
    laptop = LaptopRun(keep_awake=settings.keep_awake, pause_below_battery=settings.pause_below_battery,
                       notify=settings.notify, memory_limit_gb=settings.memory_limit_gb,
                       continue_file=continue_file, run_name=name)
    # What the laptop side says on entry (the memory limit) reaches the command with the stage's
    # first event: a bad input the stage finds before it says anything stays a one-line error.
    held_back: list[Event] = []

    def emit(event: Event) -> None:
        while held_back:
            on_event(held_back.pop(0))
        on_event(event)
        laptop.on_event(event)

    with laptop.running(fan_out(held_back.append, laptop.on_event)):
        laptop.on_event(StageStarted(stage=stage))
        try:
            yield emit, laptop.wrap(should_stop, emit)
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
            laptop.on_event(Finished(stage="run", stopped=True))
            raise
        except Exception as error:
            laptop.on_event(Failed(stage=stage, error=str(error)))
            raise
        laptop.on_event(Finished(stage="run", stopped=should_stop()))
