"""The one MLX thread: teacher, serve and the TUI engine start theirs through `mlx_distill.mlx_thread`."""

from __future__ import annotations

import threading

import mlx.core as mx
import pytest

from mlx_distill.mlx_thread import run_in_mlx_thread, start_mlx_thread


def test_run_in_mlx_thread_returns_raises_and_runs_elsewhere():
    caller = threading.current_thread()
    seen = {}

    def work(stop):
        seen["thread"] = threading.current_thread()
        return int(mx.array([1, 2, 3]).sum().item())  # makes this thread's MLX stream

    assert run_in_mlx_thread(work, name="t") == 6
    assert seen["thread"] is not caller and not seen["thread"].is_alive()

    def fail(stop):
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        run_in_mlx_thread(fail)


def test_stop_is_passed_through():
    assert run_in_mlx_thread(lambda stop: stop(), lambda: True) is True
    assert run_in_mlx_thread(lambda stop: stop()) is False


def test_start_mlx_thread_runs_the_target_and_ends():
    done = threading.Event()
    thread = start_mlx_thread(lambda: (mx.eval(mx.ones(3)), done.set()), "t", daemon=True)
    thread.join(10)
    assert done.is_set() and not thread.is_alive() and thread.name == "t"

