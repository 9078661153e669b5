"""A running `mlx-distill serve` for tests and benchmarks: a StudentServer on a free loopback port."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import openai

from mlx_distill.methods import predict_prompt
from mlx_distill.serve import ServeOptions, StudentServer
from mlx_distill.serve.answers import Question
from mlx_distill.serve.worker import Job
from mlx_distill.student import generate, load_student


class RunningServer:
    """A StudentServer on its own thread until `close`, asked through the official OpenAI client.

    Args:
        student: The student folder.
        name: The model name clients send. Default: ``"tiny"``.
        **options: `ServeOptions` fields (the port is always a free one).
    """

    def __init__(self, student: Path, name: str = "tiny", **options):
        self.server = StudentServer(student, ServeOptions(port=0, **options), name=name)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert self.server.started.wait(60), "the server did not start within 60 s"
        self.url, self.worker = self.server.url, self.server.worker
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=options.get("api_key") or "none",
                                    max_retries=0, timeout=120)
        self._holds: list[threading.Event] = []

    def hold_worker(self) -> threading.Event:
        """Submit a job that keeps the worker waiting (queued jobs stay queued) until the returned
        event is set, or until `close`; returns once the worker is held."""
        entered, release = threading.Event(), threading.Event()
        self._holds.append(release)

        def hold(event) -> None:  # runs on the worker thread: the worker waits here
            entered.set()
            release.wait(30)

        self.worker.submit(Job(Question("hold the worker", max_tokens=1), hold))
        assert entered.wait(30), "the worker did not take the holding job within 30 s"
        return release

    def close(self) -> None:
        for release in self._holds:
            release.set()
        self.server.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the server did not stop within 60 s"

    @staticmethod
    def wait_until(condition: Callable[[], bool], seconds: float = 30) -> bool:
        """Poll ``condition`` until it holds or ``seconds`` pass; its last value."""
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        return condition()


def ask(client: openai.OpenAI, question: str, model: str = "tiny", **kw):
    """One chat completion of ``question`` (``kw``: the OpenAI request's other fields)."""
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], **kw)


def greedy_reference(student: Path, default_max_tokens: int = 64) -> Callable[..., str]:
    """``answer(question, max_tokens)``: what `generate` answers, on the caller's own copy of the
    student (its ``model`` and ``tokenizer`` attributes are that copy)."""
    model, tokenizer = load_student(student)

    def answer(question: str, max_tokens: int = default_max_tokens) -> str:
        return generate(model, tokenizer, [predict_prompt(question)], max_tokens=max_tokens)[0].strip()

    answer.model, answer.tokenizer = model, tokenizer
    return answer
