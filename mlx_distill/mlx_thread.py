"""The one thread of a process that touches MLX: the teacher's generation, serve's worker and the
TUI's engine each start theirs here.

MLX streams are thread-local (mlx >= 0.31) and abort the process at exit unless the thread that
made them frees them (``mx.clear_streams()``) before it ends; `start_mlx_thread` does that for
any target. `run_in_mlx_thread` runs one piece of work there and waits for it, as a call would.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, TypeVar

from mlx_distill.events import ShouldStop, never_stop

_T = TypeVar("_T")


def _clear_streams() -> None:
    mx = sys.modules.get("mlx.core")  # a thread that never imported MLX made no streams
    if mx is not None:
        mx.clear_streams()


def start_mlx_thread(target: Callable[[], None], name: str, *, daemon: bool = False) -> threading.Thread:
    """Start a thread that runs ``target`` and then frees the MLX streams it made."""

    def run() -> None:
        try:
            target()
        finally:
            _clear_streams()

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()
    return thread


def run_in_mlx_thread(work: Callable[[ShouldStop], _T], should_stop: ShouldStop = never_stop, *,
                      name: str = "mlx-distill") -> _T:
    """``work(stop)`` on its own MLX thread; returns its result or raises its error here.

    An interrupt of the waiting caller (Ctrl-C) asks ``work`` to stop (``stop()`` turns true),
    waits for it to save what is finished, then goes on up.
    """
    interrupted, finished = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work(lambda: interrupted.is_set() or should_stop())
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error
        finally:
            finished.set()

    thread = start_mlx_thread(target, name)
    try:
        # Event.wait, not Thread.join: a join interrupted by Ctrl-C may report a live thread as ended.
        finished.wait()
    except BaseException:
        interrupted.set()
        finished.wait()
        raise
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
