"""The generation worker: the one thread that touches MLX, answering queued questions by continuous batching.

Requests from any thread `submit` a `Job` to a bounded queue and get `Piece` / `Done` /
`Refused` events back through the job's ``deliver`` callback. The worker keeps one
`mlx_distill.student.ContinuousDecoder` running: between two decoding steps it admits the queued
jobs that fit in ``max_batch`` rows (each job's question encoded alone first, so a question the
tokenizer refuses is refused alone), and every row leaves the step it finishes, so a short answer
never waits for a long one. Every streaming job gets its text token by token (``cot`` answers,
read from the whole chain, come whole). A job whose client left (``cancelled``) is dropped at the
next step, or never started; a job past ``request_timeout`` is refused with 408.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx

from mlx_distill.methods import (
    MAX_INPUT_TOKENS,
    RATIONALE_MAX_TOKENS,
    answer_of,
    cut_at_stop,
    explain_prompt,
    predict_prompt,
)
from mlx_distill.mlx_thread import start_mlx_thread
from mlx_distill.serve.answers import Answer, Question, TooLong
from mlx_distill.student import ContinuousDecoder, RowRequest, RowToken, TokenText, decode_tokens, encode_prompts

ANSWER, RATIONALE = "answer", "rationale"


@dataclass(frozen=True)
class Piece:
    """A streamed piece of a job's answer or rationale."""

    part: str  # ANSWER or RATIONALE
    text: str


@dataclass(frozen=True)
class Done:
    """A job's whole answer: the last event of a job that was answered."""

    answer: Answer


@dataclass(frozen=True)
class Refused:
    """A job that was not answered, with the HTTP status and OpenAI error code that say why."""

    status: int
    message: str
    code: str
    kind: str = ""  # OpenAI's error type; by status when empty

    @property
    def error_type(self) -> str:
        return self.kind or ("server_error" if self.status >= 500 else "invalid_request_error")


Deliver = Callable[[Any], None]


@dataclass(eq=False)
class Job:
    """One question waiting for the worker; ``deliver`` is called on the worker thread."""

    question: Question
    deliver: Deliver
    stream: bool = False
    cancelled: bool = False  # set by the requester when its client went away
    queued_at: float = field(default_factory=time.monotonic)


class QueueFull(Exception):
    """The worker's queue holds ``queue_size`` jobs already."""


class WorkerStopped(Exception):
    """The worker is stopping and takes no new jobs."""


_STOP = object()


class _JobQueue:
    """A bounded FIFO of jobs in which a job whose client left takes no room."""

    def __init__(self, size: int):
        self.size = size
        self._items: collections.deque = collections.deque()
        self._ready = threading.Condition()

    def put(self, job: Any, force: bool = False) -> None:
        """Add ``job`` (``force``: even past ``size``); raises `QueueFull`."""
        with self._ready:
            if not force and len(self._items) >= self.size:
                raise QueueFull()
            self._items.append(job)
            self._ready.notify()

    def purge(self) -> list[Job]:
        """Remove and return the jobs whose client left."""
        with self._ready:
            gone = [j for j in self._items if j is not _STOP and j.cancelled]
            self._items = collections.deque(j for j in self._items if j is _STOP or not j.cancelled)
            return gone

    def get(self, block: bool) -> Any:
        """The oldest job; None when empty and not ``block``."""
        with self._ready:
            while block and not self._items:
                self._ready.wait()
            return self._items.popleft() if self._items else None

    def waiting(self) -> int:
        """Jobs whose client is still there."""
        with self._ready:
            return sum(j is not _STOP and not j.cancelled for j in self._items)


@dataclass(eq=False)
class _Part:
    """One decoded row of a job: its answer or its rationale."""

    name: str  # ANSWER or RATIONALE
    stop: tuple[str, ...]
    text: TokenText | None  # when the job streams this part or has stop strings
    tokens: list[int] = field(default_factory=list)
    raw: str = ""
    sent: int = 0  # characters of the (left-stripped) text already streamed
    finish: str | None = None


@dataclass(eq=False)
class _Active:
    job: Job
    parts: dict[str, _Part]
    prompt_tokens: int
    number: int


class GenerationWorker:
    """Loads the student on its own thread and answers jobs there, continuously batched.

    Args:
        load: Returns ``(model, tokenizer)``; called on the worker thread.
        method: The student's training method (how answers and rationales are read).
        max_batch: Most rows decoded together (a job asking for a rationale takes two). Default: ``32``.
        queue_size: Most jobs waiting to start; `submit` raises `QueueFull` past it. Default: ``64``.
        max_input_tokens: Longer questions are refused. Default: ``512``.
        request_timeout: Seconds a job may take from `submit` to its answer; later it is refused
            with 408 and its rows dropped. Default: ``None`` (no limit).
    """

    def __init__(self, load: Callable[[], tuple[Any, Any]], method: str, *, max_batch: int = 32,
                 queue_size: int = 64, max_input_tokens: int = MAX_INPUT_TOKENS,
                 request_timeout: float | None = None):
        self.load, self.method = load, method
        self.max_batch, self.max_input_tokens, self.request_timeout = max_batch, max_input_tokens, request_timeout
        self.jobs = _JobQueue(queue_size)
        self.steps = 0  # decoding steps so far (for tests)
        self.largest_batch = 0  # most rows in one step
        self.answered = 0  # jobs answered (Done)
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._stopping = False
        self._open: set[Job] = set()  # submitted and not yet answered or refused
        self._open_lock = threading.Lock()
        self._active: dict[Job, _Active] = {}
        self._waiting: Job | None = None  # taken from the queue, admitted when rows free up
        self._numbers = 0

    # ---- the requesters' side (any thread) ----

    def start(self) -> None:
        """Start the thread and wait until the student is loaded (its load error is raised here)."""
        self._thread = start_mlx_thread(self._run, "mlx-generation", daemon=True)
        self._loaded.wait()
        if self._load_error is not None:
            self._thread.join()
            raise self._load_error

    def submit(self, job: Job) -> None:
        """Queue a job; raises `QueueFull` or `WorkerStopped` instead of waiting."""
        if self._stopping or not self.alive:
            raise WorkerStopped()
        with self._open_lock:
            self._open.add(job)
        try:
            try:
                self.jobs.put(job)
            except QueueFull:  # jobs whose client left take no room
                for gone in self.jobs.purge():
                    self._close(gone)
                self.jobs.put(job)
        except QueueFull:
            self._close(job)
            raise

    def abort(self, message: str) -> None:
        """Refuse every open job now (503), from any thread; the worker drops their rows."""
        with self._open_lock:
            jobs, self._open = list(self._open), set()
        for job in jobs:
            job.cancelled = True
            _send(job, Refused(503, message, "server_shutdown"))

    def stop(self, drain: bool = True) -> None:
        """Answer the jobs already queued (or, without ``drain``, refuse them), then end the thread."""
        self._stopping = True
        if not drain:
            self.abort("the server was stopped before this request was answered; retry later")
        if self._thread is not None and self._thread.is_alive():
            self.jobs.put(_STOP, force=True)
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queued(self) -> int:
        """Jobs waiting to start whose client is still there."""
        return self.jobs.waiting()

    @property
    def live_rows(self) -> int:
        """Rows decoding now."""
        decoder = getattr(self, "decoder", None)
        return decoder.live if decoder is not None else 0

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet answered or refused (queued or being decoded)."""
        return len(self._open)

    @property
    def peak_memory(self) -> int:
        """Peak bytes MLX held since the student was loaded (the load included)."""
        return int(mx.get_peak_memory())

    def retry_after(self) -> int:
        """Seconds a refused client should wait before it asks again (the ``Retry-After`` header)."""
        return 1

    def _close(self, job: Job) -> None:
        with self._open_lock:
            self._open.discard(job)

    # ---- the worker thread ----

    def _run(self) -> None:
        try:
            mx.reset_peak_memory()
            self.model, self.tokenizer = self.load()
            self.decoder = ContinuousDecoder(self.model)
        except BaseException as error:  # handed to start(), which raises it on the caller's thread
            self._load_error = error
            return
        finally:
            self._loaded.set()
        stopping = False
        while not (stopping and not self._active and self._waiting is None):
            try:
                stopping = self._admit(block=not self._active and not stopping) or stopping
                self._drop_abandoned()
                if self._active:
                    self._step()
            except Exception as error:  # a bug must not end the server: each live request gets a 500
                self._fail_all(error)

    def _fail_all(self, error: Exception) -> None:
        self.decoder = ContinuousDecoder(self.model)  # a fresh one: the old may be half-way through a step
        for active in list(self._active.values()):
            self._active.pop(active.job, None)
            self._finish(active.job, Refused(500, f"generation failed: {type(error).__name__}: {error}",
                                             "server_error"))

    def _admit(self, block: bool) -> bool:
        """Start the queued jobs that fit (waiting for one when ``block``); True once stop was asked."""
        stop = False
        newcomers: list[tuple[_Active, list[RowRequest]]] = []
        rows = self.decoder.live
        while True:
            job = self._waiting
            self._waiting = None
            if job is None:
                job = self.jobs.get(block=block and not newcomers)
                if job is None:
                    break
            if job is _STOP:
                stop = True
                break
            need = 2 if job.question.explain and self.method == "step-by-step" else 1
            if rows + need > self.max_batch and (rows or newcomers):
                self._waiting = job
                break
            started = self._start(job)
            if started is not None:
                newcomers.append(started)
                rows += len(started[1])
        if newcomers:
            self._join(newcomers)
        return stop

    def _start(self, job: Job) -> tuple[_Active, list[RowRequest]] | None:
        """The job's rows, its question encoded alone; None when it is not started (refused or left)."""
        if job.cancelled:
            self._close(job)
            return None
        if self._timed_out(job):
            return None
        q = job.question
        prompts = {ANSWER: predict_prompt(q.text)}
        if q.explain and self.method == "step-by-step":
            prompts[RATIONALE] = explain_prompt(q.text)
        try:
            ids, cut = encode_prompts(self.tokenizer, list(prompts.values()), self.max_input_tokens)
        except Exception as error:  # noqa: BLE001 - any tokenizer failure is this request's fault
            self._finish(job, Refused(400, f"the question cannot be read ({type(error).__name__}: {error})",
                                      "invalid_value"))
            return None
        if cut:
            self._finish(job, Refused(400, TooLong(len(ids[cut[0]]), self.max_input_tokens).message,
                                      "context_length_exceeded"))
            return None
        self._numbers += 1
        streams = job.stream and self.method != "cot"  # a cot answer is read from its whole chain
        parts, requests = {}, []
        for (name, prompt), row_ids in zip(prompts.items(), ids):
            stop = q.stop if name == ANSWER else ()
            text = TokenText(self.tokenizer, self.model.args.eos_token_id) if streams or stop else None
            parts[name] = _Part(name, stop, text)
            max_tokens = q.max_tokens if name == ANSWER else RATIONALE_MAX_TOKENS
            requests.append(RowRequest((self._numbers, name), row_ids, max_tokens, q.temperature, q.top_p))
        return _Active(job, parts, sum(len(row) for row in ids), self._numbers), requests

    def _join(self, newcomers: list[tuple[_Active, list[RowRequest]]]) -> None:
        try:
            self.decoder.add([request for _, requests in newcomers for request in requests])
        except Exception:  # noqa: BLE001 - find the job at fault: each alone, the others still join
            for active, requests in newcomers:
                try:
                    self.decoder.add(requests)
                except Exception as error:  # noqa: BLE001 - refused alone; the server goes on
                    self._finish(active.job, Refused(500, f"generation failed: {type(error).__name__}: {error}",
                                                     "server_error"))
                    continue
                self._active[active.job] = active
            return
        for active, _ in newcomers:
            self._active[active.job] = active

    def _timed_out(self, job: Job) -> bool:
        if self.request_timeout is None or time.monotonic() - job.queued_at <= self.request_timeout:
            return False
        self._finish(job, Refused(408, f"Request timed out: no answer within the server's --request-timeout "
                                       f"({self.request_timeout:g} s); ask for fewer tokens or retry later",
                                  "request_timeout", "timeout_error"))
        return True

    def _drop_abandoned(self) -> None:
        """Drop the rows of jobs whose client left or whose time ran out (and the job next in line)."""
        waiting = self._waiting
        if waiting is not None and (waiting.cancelled or self._timed_out(waiting)):
            self._close(waiting)
            self._waiting = None
        gone = [active for job, active in self._active.items() if job.cancelled or self._timed_out(job)]
        for active in gone:
            self._close(active.job)
            self._retire(active)

    def _retire(self, active: _Active) -> None:
        self._active.pop(active.job, None)
        self.decoder.drop([(active.number, name) for name in active.parts])

    def _step(self) -> None:
        self.largest_batch = max(self.largest_batch, self.decoder.live)
        by_number = {active.number: active for active in self._active.values()}
        tokens = self.decoder.step()
        self.steps += 1
        for row in tokens:
            number, name = row.key
            active = by_number.get(number)
            if active is not None and active.job in self._active:
                self._take(active, active.parts[name], row)

    def _take(self, active: _Active, part: _Part, row: RowToken) -> None:
        """One token of one part: stream its text, cut at a stop string, answer when all parts end."""
        job = active.job
        if row.token != self.model.args.eos_token_id:
            part.tokens.append(row.token)
        part.finish = row.finish_reason
        if part.text is not None:
            part.raw += part.text.add(row.token, last=part.finish is not None)
            text, stopped = cut_at_stop(part.raw.lstrip(), part.stop)
            if stopped and part.finish is None:
                part.finish = "stop"
                self.decoder.drop([row.key])
            if job.stream and self.method != "cot":
                # Trailing spaces and a possible start of a stop string wait for what follows.
                end = len(text) if stopped else len(text.rstrip())
                if part.finish is None:
                    end = min(end, len(text) - (max((len(s) for s in part.stop), default=1) - 1))
                if end > part.sent:
                    _send(job, Piece(part.name, text[part.sent:end]))
                    part.sent = end
        if all(p.finish is not None for p in active.parts.values()):
            self._active.pop(job, None)
            self._finish(job, Done(self._answer(active)))

    def _answer(self, active: _Active) -> Answer:
        q, parts = active.job.question, active.parts
        answer = parts[ANSWER]
        generated = decode_tokens(self.tokenizer, answer.tokens)
        if active.job.stream and self.method != "cot":
            text, stopped = cut_at_stop(answer.raw.lstrip(), answer.stop)
            text = text[: answer.sent]  # what was streamed
        else:
            text, stopped = cut_at_stop(answer_of(self.method, generated), q.stop)
        finish = "stop" if stopped or answer.finish == "stop" else "length"
        rationale = None
        if q.explain and self.method == "cot":
            rationale = generated.strip()
        elif RATIONALE in parts:
            rationale = decode_tokens(self.tokenizer, parts[RATIONALE].tokens).strip()
        used = sum(len(p.tokens) for p in parts.values())
        return Answer(text, finish, active.prompt_tokens, used, rationale)

    def _finish(self, job: Job, event: Done | Refused) -> None:
        self._close(job)
        self.answered += isinstance(event, Done)
        _send(job, event)


def _send(job: Job, event: Any) -> None:
    try:
        job.deliver(event)
    except RuntimeError:  # the requester's event loop is closed: nobody is waiting any more
        job.cancelled = True
