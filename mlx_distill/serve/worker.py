"""The generation worker: the one thread that touches MLX, answering queued questions in batches.

Requests from any thread `submit` a `Job` to a bounded queue and get `Piece` / `Done` /
`Refused` events back through the job's ``deliver`` callback. The worker takes every queued job
(up to ``max_batch``), waits ``batch_wait`` seconds for more when the last batch had company,
and answers them all in one `answer_batch` call: concurrent requests are decoded together. A
streaming request that is alone is streamed token by token (`mlx_distill.student.stream_generate`);
streaming requests that share a batch get their text when the batch ends.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import mlx.core as mx

from mlx_distill.methods import MAX_INPUT_TOKENS, RATIONALE_MAX_TOKENS, explain_prompt, predict_prompt
from mlx_distill.methods import cut_at_stop
from mlx_distill.mlx_thread import start_mlx_thread
from mlx_distill.serve.answers import Answer, Question, TooLong, answer_batch
from mlx_distill.student import encode_prompts, stream_generate

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


Deliver = Callable[[Any], None]


@dataclass(eq=False)
class Job:
    """One question waiting for the worker; ``deliver`` is called on the worker thread."""

    question: Question
    deliver: Deliver
    stream: bool = False
    cancelled: bool = False  # set by the requester when its client went away
    queued_at: float = field(default_factory=time.perf_counter)


class QueueFull(Exception):
    """The worker's queue holds ``queue_size`` jobs already."""


class WorkerStopped(Exception):
    """The worker is stopping and takes no new jobs."""


_STOP = object()


class GenerationWorker:
    """Loads the student on its own thread and answers jobs there, batched.

    Args:
        load: Returns ``(model, tokenizer)``; called on the worker thread.
        method: The student's training method (how answers and rationales are read).
        max_batch: Most questions decoded together. Default: ``32``.
        batch_wait: Seconds to wait after the first queued job for others to join its batch.
            Default: ``0.02`` (measured: 16 clients 4.3x one at a time; 5 ms gave 3.2x).
        queue_size: Most jobs waiting; `submit` raises `QueueFull` past it. Default: ``64``.
        max_input_tokens: Longer questions are refused. Default: ``512``.
    """

    def __init__(self, load: Callable[[], tuple[Any, Any]], method: str, *, max_batch: int = 32,
                 batch_wait: float = 0.02, queue_size: int = 64, max_input_tokens: int = MAX_INPUT_TOKENS):
        self.load, self.method = load, method
        self.max_batch, self.batch_wait, self.max_input_tokens = max_batch, batch_wait, max_input_tokens
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.batches = 0  # batches decoded so far (for /health and tests)
        self.answered = 0  # jobs answered (Done)
        self.largest_batch = 0
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._stopping = False
        self._last_batch = 0
        self._open: set[Job] = set()  # submitted and not yet answered or refused
        self._open_lock = threading.Lock()

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
            self.jobs.put_nowait(job)
        except queue.Full:
            self._close(job)
            raise QueueFull() from None

    def abort(self, message: str) -> None:
        """Refuse every open job now (503), from any thread; the worker drops their rows."""
        with self._open_lock:
            jobs, self._open = list(self._open), set()
        for job in jobs:
            job.cancelled = True
            _send(job, Refused(503, message, "server_shutdown"))

    def _close(self, job: Job) -> None:
        with self._open_lock:
            self._open.discard(job)

    def stop(self, drain: bool = True) -> None:
        """Answer the jobs already queued (or, without ``drain``, refuse them), then end the thread."""
        self._stopping = True
        if not drain:
            self.abort("the server was stopped before this request was answered; retry later")
        if self._thread is not None and self._thread.is_alive():
            self.jobs.put(_STOP)
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queued(self) -> int:
        return self.jobs.qsize()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet answered or refused (queued or being decoded)."""
        return len(self._open)

    @property
    def peak_memory(self) -> int:
        """Peak bytes MLX held since the student was loaded (the load included)."""
        return int(mx.get_peak_memory())

    # ---- the worker thread ----

    def _run(self) -> None:
        try:
            mx.reset_peak_memory()
            self.model, self.tokenizer = self.load()
        except BaseException as error:  # handed to start(), which raises it on the caller's thread
            self._load_error = error
            return
        finally:
            self._loaded.set()
        while True:
            batch = self._next_batch()
            jobs = [job for job in batch if job is not _STOP]
            if jobs:
                self._answer(jobs)
            if len(jobs) < len(batch):
                return

    def _next_batch(self) -> list:
        batch = [self.jobs.get()]
        # Wait for company only when requests have been coming together: a lone client waits for nobody.
        deadline = time.perf_counter() + (self.batch_wait if self._last_batch > 1 else 0.0)
        while len(batch) < self.max_batch and batch[-1] is not _STOP:
            try:
                batch.append(self.jobs.get(timeout=max(0.0, deadline - time.perf_counter())))
            except queue.Empty:
                break
        self._last_batch = len(batch)
        return batch

    def _finish(self, job: Job, event: Done | Refused) -> None:
        self._close(job)
        self.answered += isinstance(event, Done)
        _send(job, event)

    def _readable(self, job: Job) -> bool:
        """Encode the job's question alone: one that the tokenizer refuses is refused alone (400)."""
        try:
            encode_prompts(self.tokenizer, [predict_prompt(job.question.text)], self.max_input_tokens)
        except Exception as error:  # noqa: BLE001 - any tokenizer failure is this request's fault
            self._finish(job, Refused(400, f"the question cannot be read ({type(error).__name__}: {error})",
                                      "invalid_value"))
            return False
        return True

    def _answer(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.cancelled:
                self._close(job)
        jobs = [job for job in jobs if not job.cancelled and self._readable(job)]
        if not jobs:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        try:
            if len(jobs) == 1 and jobs[0].stream and self.method != "cot":
                self._stream(jobs[0])
                return
            answers = answer_batch(self.model, self.tokenizer, self.method, [job.question for job in jobs],
                                   max_input_tokens=self.max_input_tokens, refuse_too_long=True)
        except Exception as error:  # a bug must not end the server: each waiting request gets a 500
            for job in jobs:
                self._finish(job, Refused(500, f"generation failed: {type(error).__name__}: {error}",
                                          "server_error"))
            return
        for job, answer in zip(jobs, answers):
            if isinstance(answer, TooLong):
                self._finish(job, Refused(400, answer.message, "context_length_exceeded"))
            else:
                self._finish(job, Done(answer))

    def _stream(self, job: Job) -> None:
        q = job.question
        prompts = [predict_prompt(q.text)] + ([explain_prompt(q.text)] if q.explain else [])
        ids, cut = encode_prompts(self.tokenizer, prompts, self.max_input_tokens)
        if cut:
            self._finish(job, Refused(400, TooLong(len(ids[cut[0]]), self.max_input_tokens).message,
                                      "context_length_exceeded"))
            return
        text, finish, tokens = self._stream_part(job, ANSWER, prompts[0], q.max_tokens, q.stop)
        rationale = None
        if q.explain and not job.cancelled:
            rationale, _, more = self._stream_part(job, RATIONALE, prompts[1], RATIONALE_MAX_TOKENS, ())
            tokens += more
        self._finish(job, Done(Answer(text, finish, sum(len(row) for row in ids), tokens, rationale)))

    def _stream_part(self, job: Job, part: str, prompt: str, max_tokens: int,
                     stop: tuple[str, ...]) -> tuple[str, str, int]:
        """Stream one prompt's text to the job as `Piece` events; the text sent, finish, tokens.

        The pieces join to the text the batched path gives: leading spaces are dropped, trailing
        spaces and a possible start of a stop string wait for what follows.
        """
        q = job.question
        hold = max((len(s) for s in stop), default=1) - 1
        raw, text, sent, finish, tokens = "", "", 0, "length", 0
        for response in stream_generate(self.model, self.tokenizer, prompt, max_tokens=max_tokens,
                                        temperature=q.temperature, top_p=q.top_p,
                                        max_input_tokens=self.max_input_tokens):
            if job.cancelled:
                break
            raw += response.text
            tokens = response.generated_tokens - (response.finish_reason == "stop")
            text = raw.lstrip()
            text, stopped = cut_at_stop(text, stop)
            end = len(text) if stopped else len(text.rstrip())  # text before a stop string is kept as it is
            if not (stopped or response.finish_reason):
                end = min(end, len(text) - hold)
            if end > sent:
                _send(job, Piece(part, text[sent:end]))
                sent = end
            if stopped or response.finish_reason:
                finish = "stop" if stopped else response.finish_reason
                break
        return text[:sent], finish, tokens


def _send(job: Job, event: Any) -> None:
    try:
        job.deliver(event)
    except RuntimeError:  # the requester's event loop is closed: nobody is waiting any more
        job.cancelled = True
