"""Run the API on uvicorn: the student's name, the worker, the app, a free or given port.

uvicorn owns Ctrl-C: the first one stops accepting connections and waits for the requests in
flight (the worker answers them), a second one stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
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
    batch_wait: float = 0.02  # GenerationWorker's default, see there
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
                                       batch_wait=options.batch_wait, queue_size=options.queue_size)
        limits = Limits(self.name, method, default_max_tokens=answer_max_tokens(method),
                        max_tokens=options.max_tokens)
        self.app = build_app(self.worker, limits, api_key=options.api_key, max_body_bytes=options.max_body_bytes)
        config = uvicorn.Config(self.app, host=options.host, port=options.port, log_level="warning",
                                access_log=False, lifespan="off")
        self.server = _Server(config)
        self.started = threading.Event()
        self.url = ""

    def run(self, on_started: Callable[[str], None] = lambda url: None) -> None:
        """Load the student, listen, serve until stopped, answer what is in flight, then return."""
        self.worker.start()
        try:
            def started(url: str) -> None:
                self.url = url
                self.started.set()
                on_started(url)

            self.server.on_started = started
            try:
                self.server.run()
            except SystemExit:  # uvicorn exits when it cannot bind; it has logged why
                pass
            if not self.server.started:
                raise DistillError(f"cannot listen on {self.options.host}:{self.options.port} (in use?); "
                                   "give another --port")
        finally:
            self.worker.stop()
            self.started.set()

    def stop(self) -> None:
        """Ask the server to stop (from any thread); requests in flight are still answered."""
        self.server.should_exit = True


class _Server(uvicorn.Server):
    """uvicorn's server that says its address once it listens, and exits 0 after Ctrl-C."""

    on_started: Callable[[str], None] = staticmethod(lambda url: None)

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

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.on_started(f"http://{shown}:{port}")
