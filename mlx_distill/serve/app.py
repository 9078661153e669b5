"""The OpenAI-compatible HTTP API (Starlette): routes, the API key, limits, and SSE streaming.

Handlers never touch MLX: they parse the body into a `Question`, hand it to the
`GenerationWorker` and wait on the request's own asyncio queue for its events.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mlx_distill.serve.answers import Answer
from mlx_distill.serve.requests import ApiError, Limits, Parsed, error_body, parse_chat, parse_completion
from mlx_distill.serve.worker import (
    ANSWER,
    Done,
    GenerationWorker,
    Job,
    Piece,
    QueueFull,
    Refused,
    WorkerStopped,
)

MAX_BODY_BYTES = 1 << 20
BODY_SECONDS = 30.0  # a client slower than this to send its body holds a connection for nothing


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is {length} bytes; at most {limit}", code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
    return bytes(data)


async def _read_json(request: Request, limit: int, stopping: threading.Event) -> Any:
    """The body as JSON; a body still arriving when the server stops (or after `BODY_SECONDS`) is refused."""
    reading = asyncio.ensure_future(_read_body(request, limit))
    deadline = time.monotonic() + BODY_SECONDS
    while not reading.done():
        await asyncio.wait({reading}, timeout=0.1)
        if not reading.done() and (stopping.is_set() or time.monotonic() > deadline):
            reading.cancel()
            if stopping.is_set():
                raise ApiError(503, "the server is stopping", kind="server_error", code="server_shutdown")
            raise ApiError(408, f"the request body did not arrive within {BODY_SECONDS:.0f} s",
                           code="request_timeout")
    data = reading.result()
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON ({error})") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply; send a flat OpenAI request") from None


class _Endpoint:
    """One completion endpoint: chat (``chat.completion``) or text (``text_completion``)."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.object = "chat.completion" if chat else "text_completion"
        self.prefix = "chatcmpl-" if chat else "cmpl-"

    def _choice(self, answer: Answer, explain: bool) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": answer.text}
            if explain:
                message["rationale"] = answer.rationale
            return {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
        choice = {"index": 0, "text": answer.text, "logprobs": None, "finish_reason": answer.finish_reason}
        if explain:
            choice["rationale"] = answer.rationale
        return choice

    @staticmethod
    def usage(answer: Answer) -> dict[str, int]:
        return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens}

    def body(self, answer: Answer, explain: bool) -> dict[str, Any]:
        return {"id": self.prefix + uuid.uuid4().hex, "object": self.object, "created": int(time.time()),
                "model": self.model, "choices": [self._choice(answer, explain)], "usage": self.usage(answer)}

    def chunk(self, ident: str, created: int, delta: dict[str, Any] | None,
              finish: str | None = None, usage: dict | None = None) -> str:
        """One server-sent event in OpenAI's chunk format (``delta`` None: the usage-only chunk)."""
        if delta is None:
            choices = []
        elif self.chat:
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
            if "rationale" in delta:
                choice["rationale"] = delta["rationale"]
            choices = [choice]
        body: dict[str, Any] = {"id": ident, "object": self.object + ("" if not self.chat else ".chunk"),
                                "created": created, "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"


def _piece_delta(event: Piece) -> dict[str, str]:
    return {"content" if event.part == ANSWER else "rationale": event.text}


def build_app(worker: GenerationWorker, limits: Limits, *, api_key: str | None = None,
              max_body_bytes: int = MAX_BODY_BYTES, stopping: threading.Event | None = None) -> Starlette:
    """The Starlette app that serves ``worker``'s student as ``limits.model``.

    Args:
        worker: The started generation worker.
        limits: The model name, method and request limits.
        api_key: When set, every ``/v1/`` request must send ``Authorization: Bearer <api_key>``.
        max_body_bytes: Larger bodies are refused with 413. Default: 1 MiB.
        stopping: Set when the server stops: bodies still arriving are refused with 503.
    """
    stopping = stopping if stopping is not None else threading.Event()
    key = api_key.encode() if api_key else None

    def authorized(request: Request) -> bool:
        if key is None:
            return True
        sent = request.headers.get("authorization", "")
        token = sent[7:] if sent[:7].lower() == "bearer " else ""
        return hmac.compare_digest(token.encode(), key)

    async def health(request: Request) -> Response:
        status = 200 if worker.alive else 503
        return JSONResponse({"status": "ok" if worker.alive else "stopping", "model": limits.model,
                             "queued": worker.queued, "in_flight": worker.in_flight, "live_rows": worker.live_rows,
                             "peak_memory_bytes": worker.peak_memory}, status_code=status)

    def model_card() -> dict[str, Any]:
        return {"id": limits.model, "object": "model", "created": int(time.time()), "owned_by": "mlx-distill"}

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        if request.path_params["name"] != limits.model:
            raise ApiError(404, f"the model {request.path_params['name']!r} does not exist; "
                                f"this server has {limits.model!r}", "model", "model_not_found")
        return JSONResponse(model_card())

    def completion(parse: Callable[[Any, Limits], Parsed], endpoint: _Endpoint):
        async def handle(request: Request) -> Response:
            parsed = parse(await _read_json(request, max_body_bytes, stopping), limits)
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()
            job = Job(parsed.question, lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                      stream=parsed.stream)
            try:
                worker.submit(job)
            except QueueFull:
                raise ApiError(429, f"the server is busy ({worker.queued} questions waiting); retry shortly",
                               kind="rate_limit_error", code="rate_limit_exceeded",
                               headers={"Retry-After": str(worker.retry_after())}) from None
            except WorkerStopped:
                raise ApiError(503, "the server is shutting down", kind="server_error") from None
            first = await _first_event(request, events, job)
            if isinstance(first, Refused):
                raise ApiError(first.status, first.message, code=first.code, kind=first.error_type)
            if not parsed.stream:
                return JSONResponse(endpoint.body(first.answer, parsed.question.explain))
            return StreamingResponse(_sse(endpoint, parsed, job, first, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        return handle

    async def api_error(request: Request, error: ApiError) -> Response:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def http_error(request: Request, error: HTTPException) -> Response:
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}")

    async def disconnect(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=499)

    async def server_error(request: Request, error: Exception) -> Response:
        return _error(500, f"internal error: {type(error).__name__}: {error}", "server_error")

    def guarded(handler):
        async def handle(request: Request) -> Response:
            if not authorized(request):
                raise ApiError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                               code="invalid_api_key")
            return await handler(request)

        return handle

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(model), methods=["GET"]),
        Route("/v1/chat/completions", guarded(completion(parse_chat, _Endpoint(True, limits.model))),
              methods=["POST"]),
        Route("/v1/completions", guarded(completion(parse_completion, _Endpoint(False, limits.model))),
              methods=["POST"]),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, ClientDisconnect: disconnect, Exception: server_error}
    return Starlette(routes=routes, exception_handlers=handlers)


async def _first_event(request: Request, events: asyncio.Queue, job: Job) -> Any:
    """The job's first event; a client that leaves before it cancels the job (dropped at the next step)."""
    getting = asyncio.ensure_future(events.get())
    leaving = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({getting, leaving}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancelled = True
        raise
    finally:
        leaving.cancel()
        if not getting.done():
            getting.cancel()
    if not getting.done() or getting.cancelled():
        job.cancelled = True
        raise ClientDisconnect()
    return getting.result()


async def _disconnected(request: Request) -> None:
    # The body is read: what the server receives next is the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(endpoint: _Endpoint, parsed: Parsed, job: Job, first: Any,
               events: asyncio.Queue) -> AsyncIterator[str]:
    ident, created = endpoint.prefix + uuid.uuid4().hex, int(time.time())
    try:
        yield endpoint.chunk(ident, created, {"role": "assistant", "content": ""} if endpoint.chat else {"content": ""})
        event = first
        while True:
            if isinstance(event, Piece):
                yield endpoint.chunk(ident, created, _piece_delta(event))
            elif isinstance(event, Done):
                answer = event.answer
                if first is event:
                    # Answered in a shared batch: its text comes whole, in one chunk.
                    yield endpoint.chunk(ident, created, {"content": answer.text})
                    if parsed.question.explain:
                        yield endpoint.chunk(ident, created, {"rationale": answer.rationale or ""})
                yield endpoint.chunk(ident, created, {}, answer.finish_reason)
                if parsed.include_usage:
                    yield endpoint.chunk(ident, created, None, usage=endpoint.usage(answer))
                break
            elif isinstance(event, Refused):
                yield f"data: {json.dumps(error_body(event.message, event.error_type, code=event.code))}\n\n"
                break
            event = await events.get()
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled = True
