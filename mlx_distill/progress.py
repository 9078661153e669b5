"""The headless CLI's view of a run: progress bars and one-line reports, built from events.

`ProgressPrinter` is an ``on_event`` subscriber; the core never imports this module.
On a terminal the current bar is redrawn in place; elsewhere (CI logs, files) progress is
printed as plain lines at most every ``interval`` seconds so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mlx_distill.events import (
    CheckpointSaved,
    EvalResult,
    Event,
    Finished,
    Log,
    MemoryReport,
    StageFinished,
    StageStarted,
    TeacherLoaded,
    TeacherProgress,
    TeacherReleased,
    TrainStep,
)
from mlx_distill.platform import format_bytes

BAR_WIDTH = 24


def format_duration(seconds: float | None, unknown: str = "?") -> str:
    """``1h02m``, ``3m05s`` or ``42s``; ``unknown`` when there is no figure."""
    if seconds is None or seconds != seconds or seconds < 0:
        return unknown
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(round(fraction * width))
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:3.0f}%"


class ProgressPrinter:
    """Renders events for a person watching a terminal (or reading a log).

    Args:
        stream: where to write. Default: ``sys.stderr``.
        interval: on a non-terminal stream, the least time between two progress lines.
        quiet: print only stage boundaries, results and errors.
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.quiet = quiet
        self._open_line = False
        self._last_progress: float | None = None
        self._last_loss: float | None = None

    def __call__(self, event: Event) -> None:
        text = self.render(event)
        if text is None:
            return
        if isinstance(event, (TeacherProgress, TrainStep)):
            self._progress(text, final=self._is_last(event))
        else:
            self._line(text)

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.flush()

    # -- rendering -------------------------------------------------------------------------
    def render(self, event: Event) -> str | None:
        """The text for one event, or None when it is not shown."""
        if isinstance(event, StageStarted):
            return f"▶ {event.stage}" + (f": {event.detail}" if event.detail else "")
        if isinstance(event, StageFinished):
            if event.skipped:
                return f"✓ {event.stage}: already done" + (f" ({event.detail})" if event.detail else "")
            return f"✓ {event.stage} in {format_duration(event.seconds)}" + (
                f": {event.detail}" if event.detail else ""
            )
        if isinstance(event, TeacherLoaded):
            return (
                f"  teacher {event.model} loaded in {format_duration(event.seconds)} "
                f"({event.dtype}, {format_bytes(event.weight_bytes)})"
            )
        if isinstance(event, TeacherProgress):
            if self.quiet:
                return None
            rate = f"{event.accepted / event.done * 100:.0f}%" if event.done else "-"
            return (
                f"  teacher {bar(event.done, event.total)} {event.done}/{event.total} "
                f"accepted {rate} · {event.generation_tps:.1f} tok/s · ETA {format_duration(event.eta_seconds)}"
            )
        if isinstance(event, TeacherReleased):
            return f"  teacher released (peak memory {format_bytes(event.peak_bytes)})"
        if isinstance(event, TrainStep):
            if self.quiet:
                return None
            trend = ""
            if self._last_loss is not None:
                trend = "▼" if event.loss < self._last_loss else "▲"
            self._last_loss = event.loss
            parts = [f"loss {event.loss:.3f}{trend}", f"label {event.label_loss:.3f}"]
            if event.rationale_loss is not None:
                parts.append(f"rationale {event.rationale_loss:.3f}")
            parts += [f"lr {event.learning_rate:.1e}", f"{event.tokens_per_second:.0f} tok/s"]
            return (
                f"  train {bar(event.step, event.total_steps)} {event.step}/{event.total_steps} "
                + " · ".join(parts)
                + f" · ETA {format_duration(event.eta_seconds)}"
            )
        if isinstance(event, EvalResult):
            best = " (best)" if event.best else ""
            return (
                f"  {event.split} accuracy at step {event.step}: {event.accuracy * 100:.1f}% "
                f"({event.correct}/{event.total}){best}"
            )
        if isinstance(event, CheckpointSaved):
            return None if self.quiet else f"  checkpoint step {event.step} → {event.path}"
        if isinstance(event, MemoryReport):
            return (
                f"  memory ({event.stage}): peak {format_bytes(event.peak)}, "
                f"in use {format_bytes(event.active)} of {format_bytes(event.total)}"
            )
        if isinstance(event, Log):
            if self.quiet and event.level == "info":
                return None
            prefix = "" if event.level == "info" else f"{event.level}: "
            return f"  {prefix}{event.message}"
        if isinstance(event, Finished):
            if event.stopped:
                hint = f"; {event.resume_hint}" if event.resume_hint else ""
                return f"■ {event.stage} stopped, finished work kept{hint}"
            return f"■ {event.stage} finished"
        # A Failed event is for the UI's log: the CLI prints the error itself, once, as it exits.
        return None

    # -- output ----------------------------------------------------------------------------
    @staticmethod
    def _is_last(event: Event) -> bool:
        if isinstance(event, TeacherProgress):
            return event.done >= event.total
        if isinstance(event, TrainStep):
            return event.step >= event.total_steps
        return False

    def _progress(self, text: str, final: bool) -> None:
        now = time.monotonic()
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self._open_line = True
            if final:
                self.close()
            else:
                self.stream.flush()
            return
        if final or self._last_progress is None or now - self._last_progress >= self.interval:
            self._last_progress = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()
