"""The engine: the one thread of the UI process that runs MLX work.

MLX streams are thread-local (mlx >= 0.31), so every model the chat uses is loaded, run and
freed on one thread (`mlx_distill.mlx_thread.start_mlx_thread`) named ``mlx-engine`` that takes jobs from a queue and reports
through ``on_event`` (the UI passes a thread-safe ``post_message``). Requests run one after the
other, so the student and the teacher never generate at the same time. Besides chat requests it
runs ``Job``s: a function of (on_event, should_stop), such as a prompt-lab trial.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from mlx_distill.errors import DistillError
from mlx_distill.events import Event, OnEvent, ShouldStop
from mlx_distill.methods import explain_prompt, predict_prompt
from mlx_distill.mlx_thread import start_mlx_thread

# What a request's parts are called in ChatToken/ChatDone/ChatFailed.
ANSWER, RATIONALE, TEACHER = "answer", "rationale", "teacher"

TEACHER_INSTRUCTION = "Answer the question. Think step by step, then end with 'So the answer is ...'."


@dataclass(frozen=True)
class ChatRequest:
    """One question for the student (and optionally the teacher)."""

    question: str
    student: str  # a student folder (HF layout) or hub id
    student_weights: str | None = None  # a training checkpoint folder to load into it (mid-training)
    explain: bool = False  # also generate the student's own ``explain:`` rationale
    teacher: str | None = None  # a teacher hub id / folder to ask as well
    max_tokens: int = 128
    teacher_max_tokens: int = 256
    id: int = 0


@dataclass(frozen=True)
class Job:
    """Work for the engine thread: ``work(on_event, should_stop)``; its result comes back in JobDone."""

    name: str
    work: Callable[[OnEvent, ShouldStop], Any]
    id: int = 0


@dataclass(frozen=True)
class JobDone(Event):
    request_id: int
    name: str
    result: Any = None


@dataclass(frozen=True)
class JobFailed(Event):
    request_id: int
    name: str
    error: str


@dataclass(frozen=True)
class ChatToken(Event):
    request_id: int
    part: str  # answer | rationale | teacher
    text: str


@dataclass(frozen=True)
class ChatDone(Event):
    request_id: int
    part: str
    text: str
    seconds: float  # generation latency, model loading excluded
    tokens: int = 0


@dataclass(frozen=True)
class ChatFailed(Event):
    request_id: int
    part: str
    error: str


@dataclass(frozen=True)
class ModelLoading(Event):
    request_id: int
    part: str
    model: str


class ChatBackend(Protocol):
    """Loads and runs the chat models. Every method is called on the engine thread only."""

    def load_student(self, path: str, weights: str | None = None) -> Any: ...

    def stream_student(self, student: Any, prompt: str, max_tokens: int) -> Iterator[str]: ...

    def load_teacher(self, path: str) -> Any: ...

    def stream_teacher(self, teacher: Any, question: str, max_tokens: int) -> Iterator[str]: ...

    def close(self) -> None: ...


class MlxBackend:
    """The real backend: the student through ``mlx_distill.student.io``, the teacher through mlx-lm."""

    def __init__(self) -> None:
        self._used = False

    def load_student(self, path: str, weights: str | None = None) -> Any:
        from mlx_distill.student import load_student

        self._used = True
        model, tokenizer = load_student(path)
        if weights is not None:
            from mlx_distill.train import load_weights

            load_weights(model, weights)
        return model, tokenizer

    def stream_student(self, student: Any, prompt: str, max_tokens: int) -> Iterator[str]:
        from mlx_distill.student import stream_generate

        model, tokenizer = student
        for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
            yield response.text

    def load_teacher(self, path: str) -> Any:
        import mlx_lm

        self._used = True
        return mlx_lm.load(path)[:2]

    def stream_teacher(self, teacher: Any, question: str, max_tokens: int) -> Iterator[str]:
        import mlx_lm

        model, tokenizer = teacher
        text = f"{TEACHER_INSTRUCTION}\n\n{question}"
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        else:
            prompt = f"Q: {text}\nA:"
        for response in mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
            yield response.text

    def close(self) -> None:
        if not self._used:
            return
        import mlx.core as mx

        mx.clear_cache()  # the engine's thread frees its MLX streams as it ends (start_mlx_thread)


class Engine:
    """A single MLX thread serving chat requests in order.

    Args:
        on_event: called from the engine thread with ModelLoading, ChatToken, ChatDone and
            ChatFailed events (must be thread-safe, e.g. Textual's ``post_message``).
        backend: what loads and runs the models; ``MlxBackend()`` when None.
    """

    def __init__(self, on_event: OnEvent, backend: ChatBackend | None = None) -> None:
        self.on_event = on_event
        self.backend = backend if backend is not None else MlxBackend()
        self._jobs: queue.Queue[ChatRequest | Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._loaded: dict[str, tuple[tuple, Any]] = {}  # role -> (what was loaded, model)
        self._thread = start_mlx_thread(self._serve, "mlx-engine", daemon=True)

    def submit(self, request: ChatRequest | Job) -> int:
        """Queue a chat request or a job; returns its id (used by its events)."""
        request_id = request.id or next(self._ids)
        self._jobs.put(dataclasses.replace(request, id=request_id))
        return request_id

    def cancel(self) -> None:
        """Stop the request being generated now (queued ones still run)."""
        self._stop.set()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the current request, free the models and end the thread."""
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        try:
            while (request := self._jobs.get()) is not None:
                self._stop.clear()
                if isinstance(request, Job):
                    self._run_job(request)
                else:
                    self._answer(request)
        finally:
            self._loaded.clear()
            try:
                self.backend.close()
            except Exception:  # noqa: BLE001 - cleanup at exit must not raise into the UI
                pass

    def _run_job(self, job: Job) -> None:
        try:
            result = job.work(self.on_event, self._stop.is_set)
        except Exception as error:  # noqa: BLE001 - shown in the UI, never raised into it
            self.on_event(JobFailed(job.id, job.name, str(error) if isinstance(error, DistillError)
                                    else f"{type(error).__name__}: {error}"))
            return
        self.on_event(JobDone(job.id, job.name, result))

    def _model(self, role: str, request: ChatRequest, part: str) -> Any:
        if role == "student":
            path, weights = request.student, request.student_weights
        else:
            path, weights = str(request.teacher), None
        # A re-exported student or a newer checkpoint in the same folder is loaded again.
        key = (path, weights, _mtime(weights or path))
        cached = self._loaded.get(role)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._loaded.pop(role, None)
        self.on_event(ModelLoading(request.id, part, weights or path))
        model = self.backend.load_student(path, weights) if role == "student" else self.backend.load_teacher(path)
        self._loaded[role] = (key, model)
        return model

    def _answer(self, request: ChatRequest) -> None:
        parts = [(ANSWER, "student", predict_prompt(request.question), request.max_tokens)]
        if request.explain:
            parts.append((RATIONALE, "student", explain_prompt(request.question), request.max_tokens))
        if request.teacher:
            parts.append((TEACHER, "teacher", request.question, request.teacher_max_tokens))
        for part, role, prompt, max_tokens in parts:
            if self._stop.is_set():
                self.on_event(ChatFailed(request.id, part, "stopped"))
                continue
            try:
                model = self._model(role, request, part)
                stream = self.backend.stream_student if role == "student" else self.backend.stream_teacher
                start = time.perf_counter()
                pieces: list[str] = []
                for piece in stream(model, prompt, max_tokens):
                    if self._stop.is_set():
                        break
                    pieces.append(piece)
                    if piece:
                        self.on_event(ChatToken(request.id, part, piece))
                self.on_event(ChatDone(request.id, part, "".join(pieces), time.perf_counter() - start, len(pieces)))
            except Exception as error:  # noqa: BLE001 - any model failure is shown in the chat, not raised
                self.on_event(ChatFailed(request.id, part, f"{type(error).__name__}: {error}"))


def _mtime(path: str) -> float:
    folder = Path(path)
    for name in ("model.safetensors", "config.json"):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0
