"""`serve` under real load, with the official OpenAI client: continuous batching keeps every answer
exact, streams every request, drops the rows of clients that left, and says when to retry."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from mlx_distill.methods import RATIONALE_MAX_TOKENS, explain_prompt, predict_prompt
from mlx_distill.student import generate, generate_tokens, load_student
from mlx_distill.testing.serving import RunningServer as Running, ask

SHORT = [f"Is a {animal} a mammal?" for animal in ("dog", "cat", "cow", "owl", "eel", "fox")]
LONG = "Tom has 3 apples and buys 5 more. How many apples does Tom have now? Explain every step."


@pytest.fixture(scope="module")
def student(demo_models):
    return load_student(demo_models["student"])


def test_mixed_load_every_answer_is_the_single_request_answer(server, student):
    model, tokenizer = student
    expected = {q: generate(model, tokenizer, [predict_prompt(q)], max_tokens=8)[0].strip() for q in SHORT}
    long_answer = generate(model, tokenizer, [predict_prompt(LONG)], max_tokens=200)[0].strip()
    rationale = generate(model, tokenizer, [explain_prompt(LONG)], max_tokens=RATIONALE_MAX_TOKENS)[0].strip()
    errors: list[str] = []
    stop = threading.Event()

    def short_client(index: int) -> int:
        asked = 0
        while not stop.is_set() or asked == 0:
            question = SHORT[(index + asked) % len(SHORT)]
            answer = ask(server.client, question, max_tokens=8).choices[0].message.content
            if answer != expected[question]:
                errors.append(f"{question!r}: {answer!r} != {expected[question]!r}")
            asked += 1
        return asked

    with ThreadPoolExecutor(5) as pool:
        shorts = [pool.submit(short_client, i) for i in range(4)]
        message = ask(server.client, LONG, max_tokens=200, extra_body={"explain": True}).choices[0].message
        stop.set()
        asked = sum(f.result(60) for f in shorts)
    assert errors == []
    assert message.content == long_answer and message.model_extra["rationale"] == rationale
    # The short clients were answered while the long one decoded, not after it.
    assert asked > 4
    assert server.worker.largest_batch > 2


def test_a_streaming_client_that_shares_the_batch_gets_many_chunks(server, student):
    model, tokenizer = student
    expected = generate(model, tokenizer, [predict_prompt(SHORT[0])], max_tokens=40)[0].strip()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(ask, server.client, LONG, max_tokens=300, extra_body={"explain": True})
        assert server.wait_until(lambda: server.worker.live_rows >= 2)
        chunks = list(ask(server.client, SHORT[0], max_tokens=40, stream=True))
        assert busy.result(120).choices[0].message.content
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == expected


# Long enough that the answer is still being decoded when a client's 0.3 s timeout (or the server's
# 0.2 s deadline) ends it: 500 tokens take about 0.3 s here on one core, too close.
ABANDONED_TOKENS = 2048


def _long_tokens(student) -> int:
    model, tokenizer = student
    return len(generate_tokens(model, tokenizer, [predict_prompt(LONG)], max_tokens=ABANDONED_TOKENS)[0])


def test_a_client_that_leaves_frees_its_row_and_no_429_follows(demo_models, student):
    assert _long_tokens(student) == ABANDONED_TOKENS, "the tiny student ends this answer early; pick a longer one"
    running = Running(demo_models["student"], queue_size=2, max_tokens=ABANDONED_TOKENS)
    try:
        # A streaming client that closes its stream mid-answer.
        stream = ask(running.client, LONG, max_tokens=500, stream=True)
        next(iter(stream))
        assert running.worker.live_rows == 1
        stream.close()
        assert running.wait_until(lambda: running.worker.live_rows == 0, 10)
        # Non-streaming clients that give up (their HTTP timeout) while their answers are decoded.
        for _ in range(4):
            with pytest.raises(httpx.TimeoutException):
                httpx.post(running.url + "/v1/chat/completions", timeout=0.3,
                           json={"model": "tiny", "messages": [{"role": "user", "content": LONG}],
                                 "max_tokens": ABANDONED_TOKENS})
        assert running.wait_until(lambda: running.worker.live_rows == 0 and running.worker.in_flight == 0, 10)
        assert running.worker.answered == 0  # none of the abandoned answers was finished
        # The abandoned work left no queue behind: as many live clients as the queue holds are answered.
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda q: ask(running.client, q, max_tokens=4), SHORT[:2]))
        assert all(a.choices[0].message.content is not None for a in answers)
    finally:
        running.close()


def test_429_says_when_to_retry_and_a_queued_job_whose_client_left_never_starts(demo_models):
    running = Running(demo_models["student"], queue_size=1, max_batch=1)
    try:
        release = running.hold_worker()
        with pytest.raises(httpx.TimeoutException):  # queued behind the held job, then given up
            httpx.post(running.url + "/v1/chat/completions", timeout=0.5,
                       json={"model": "tiny", "messages": [{"role": "user", "content": SHORT[0]}], "max_tokens": 4})
        assert running.wait_until(lambda: running.worker.queued == 0)  # an abandoned job is not waiting
        # The abandoned job takes no room: this one is queued, the next gets 429 with Retry-After.
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(ask, running.client, SHORT[1], max_tokens=4)
            assert running.wait_until(lambda: running.worker.queued == 1)
            response = httpx.post(running.url + "/v1/chat/completions", timeout=30,
                                  json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
            assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
            release.set()
            assert queued.result(60).choices[0].message.content is not None
        assert running.worker.answered == 2  # the held job and the live client's, never the abandoned one
    finally:
        running.close()


def test_request_timeout_is_openais_timeout_error(demo_models, student):
    assert _long_tokens(student) == ABANDONED_TOKENS
    running = Running(demo_models["student"], request_timeout=0.2, max_tokens=ABANDONED_TOKENS)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            ask(running.client, LONG, max_tokens=ABANDONED_TOKENS)
        assert caught.value.status_code == 408
        assert caught.value.body["type"] == "timeout_error" and "timed out" in caught.value.message
        assert running.wait_until(lambda: running.worker.live_rows == 0, 10)
        assert ask(running.client, SHORT[0], max_tokens=2).choices[0].message.content is not None
    finally:
        running.close()
