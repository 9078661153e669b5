"""Run the API on uvicorn: the student's name, the worker, the app, a free or given port.

Ctrl-C while the student loads stops once it is loaded (a second one exits at once). While
serving, uvicorn owns Ctrl-C: the first one stops accepting connections, refuses requests whose
body is still arriving and waits for the requests in flight (the worker answers them); a second
one answers every request in flight with a 503 and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from mlx_distill.errors import DistillError
from mlx_distill.methods import answer_max_tokens
from mlx_distill.pipeline import is_run_dir
from mlx_distill.serve.app import MAX_BODY_BYTES, build_app
from mlx_distill.serve.requests import Limits
from mlx_distill.serve.worker import GenerationWorker
from mlx_distill.student import load_student
from mlx_distill.train import student_method

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOPPED_MESSAGE = "the server was stopped before this request was answered; retry later"


_frozen_by = [0]  # servers of this process serving now
_frozen_lock = threading.Lock()


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects alive now (the student, its tokenizer, transformers, the app) out of the
    garbage collector's full passes while serving: under load (16 clients, demo student) a full pass
    came every ~10 s and held the GIL, so every request in flight, for 0.2-0.3 s; frozen, ~0.
    Unfrozen when the last server of the process stops."""
    with _frozen_lock:
        gc.collect()  # what is garbage now must not be frozen
        gc.freeze()
        _frozen_by[0] += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_by[0] -= 1
            if not _frozen_by[0]:
                gc.unfreeze()


def run_folder_of(student: Path) -> Path | None:
    """The run folder a student belongs to (``RUN/student`` or ``RUN/train/student``), or None."""
    student = Path(student).resolve()
    if student.name != "student":
        return None
    if is_run_dir(student.parent):
        return student.parent
    if student.parent.name == "train" and is_run_dir(student.parent.parent):
        return student.parent.parent
    return None


def model_name(student: Path) -> str:
    """The name clients use: the run's name, or the student folder's."""
    run = run_folder_of(student)
    return run.name if run is not None else Path(student).resolve().name


def host_warning(host: str) -> str | None:
    """A warning for a host other than loopback (anyone on the network can then ask)."""
    if host in LOOPBACK:
        return None
    return (f"warning: listening on {host}: other machines can reach this server"
            " (give --api-key, or bind 127.0.0.1)")


@dataclass(frozen=True)
class ServeOptions:
    """How to serve; every default in one place."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 32
    request_timeout: float | None = None  # seconds from arrival to answer; later: 408
    queue_size: int = 64
    max_tokens: int = 512
    max_body_bytes: int = MAX_BODY_BYTES


class StudentServer:
    """A student behind the OpenAI API on uvicorn; `run` blocks (in any thread), `stop` ends it.

    Args:
        student: The student folder.
        options: Host, port, key and limits.
        name: The model name clients send. Default: the run's name.
    """

    def __init__(self, student: Path, options: ServeOptions = ServeOptions(), *, name: str | None = None):
        self.student, self.options = Path(student), options
        self.name = name or model_name(self.student)
        method = student_method(self.student)
        self.worker = GenerationWorker(lambda: load_student(self.student), method, max_batch=options.max_batch,
                                       queue_size=options.queue_size, request_timeout=options.request_timeout)
        limits = Limits(self.name, method, default_max_tokens=answer_max_tokens(method),
                        max_tokens=options.max_tokens)
        self.stopping = threading.Event()  # set by the first Ctrl-C or `stop`
        self.app = build_app(self.worker, limits, api_key=options.api_key, max_body_bytes=options.max_body_bytes,
                             stopping=self.stopping)
        config = uvicorn.Config(self.app, host=options.host, port=options.port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = _Server(config)
        self.server.on_exit = self._on_exit
        self.started = threading.Event()
        self.url = ""

    def run(self, on_started: Callable[[str], None] = lambda url: None,
            on_loading: Callable[[], None] = lambda: None) -> None:
        """Load the student, listen, serve until stopped, answer what is in flight, then return.

        Returns without serving when stopped (Ctrl-C, `stop`) while the student loads.
        """
        with _on_signals(self._stop_loading):
            on_loading()
            self.worker.start()
        if self.stopping.is_set():
            self.worker.stop()
            self.started.set()
            return
        try:
            def started(url: str) -> None:
                self.url = url
                self.started.set()
                on_started(url)

            self.server.on_started = started
            try:
                with _frozen_heap():
                    self.server.run()
            except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
                pass
            if not self.server.started:
                raise DistillError(f"cannot listen on {self.options.host}:{self.options.port} (in use?); "
                                   "give another --port")
        finally:
            # Ctrl-C while the queued requests are answered refuses them instead (never a traceback).
            with _on_signals(lambda: self.worker.abort(STOPPED_MESSAGE)):
                self.worker.stop(drain=not self.server.force_exit)
            self.started.set()

    def _stop_loading(self) -> None:
        if self.stopping.is_set():
            print("\nstopped", file=sys.stderr, flush=True)
            os._exit(130)  # nothing is served yet, so nothing is lost
        self.stopping.set()
        print("\nstopping once the student is loaded (Ctrl-C again to stop at once)…", file=sys.stderr, flush=True)

    @property
    def started_serving(self) -> bool:
        """Whether it listened (False when stopped while loading, or when it could not bind)."""
        return bool(self.server.started)

    def summary(self) -> str:
        """What it did, for the line printed on stop."""
        worker = self.worker
        return (f"answered {worker.answered} requests in {worker.steps} decoding steps "
                f"(at most {worker.largest_batch} rows at once); "
                f"peak memory {worker.peak_memory / 2**20:,.0f} MiB")

    def _on_exit(self, force: bool) -> None:
        self.stopping.set()
        if force:
            self.worker.abort(STOPPED_MESSAGE)

    def stop(self) -> None:
        """Ask the server to stop (from any thread); requests in flight are still answered."""
        self.stopping.set()
        self.server.should_exit = True


@contextlib.contextmanager
def _on_signals(handle: Callable[[], None]) -> Iterator[None]:
    """Within the block, Ctrl-C (or SIGTERM) calls ``handle`` instead of raising KeyboardInterrupt.

    An exception raised on the main thread while the worker thread is inside MLX would end the
    process under it ("terminate called without an active exception", exit 134).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda sig, frame: handle()) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Server(uvicorn.Server):
    """uvicorn's server that says its address once it listens, and exits 0 after Ctrl-C."""

    on_started: Callable[[str], None] = staticmethod(lambda url: None)
    on_exit: Callable[[bool], None] = staticmethod(lambda force: None)  # called with force_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own, without raising the signal again once drained: a stop asked for is a clean exit.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame) -> None:
        if not self.should_exit:
            print("\nstopping: answering the requests in flight (Ctrl-C again to stop at once)…",
                  file=sys.stderr, flush=True)
        super().handle_exit(sig, frame)
        self.on_exit(self.force_exit)

    async def shutdown(self, sockets=None) -> None:
        await super().shutdown(sockets)
        # After a forced stop, let the requests that were just refused send their 503 before the
        # event loop ends (it would cancel them: a plain-text 500 and a traceback each).
        deadline = time.monotonic() + 2.0
        while self.force_exit and self.server_state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.on_started(f"http://{shown}:{port}")
