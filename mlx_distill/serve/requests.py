"""OpenAI request bodies -> `Question`s, with every refusal in OpenAI's error shape.

Pure functions (no HTTP, no MLX), so each rule is tested alone. Fields OpenAI clients send that
a T5 student has no use for (``user``, ``seed``, ``presence_penalty``, ...) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mlx_distill.methods import RATIONALE_METHODS
from mlx_distill.serve.answers import Question

# No T5 piece is longer than this many characters (mlx_distill.student cuts texts the same way), so a
# question over max_input_tokens * this is too long without tokenizing it.
MAX_CHARS_PER_TOKEN = 32
MAX_STOP_STRINGS = 4


class ApiError(Exception):
    """A request the server refuses: HTTP status and OpenAI's ``error`` object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers  # extra response headers (Retry-After on 429)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    """What the server accepts."""

    model: str  # the one model name served
    method: str  # the student's training method
    default_max_tokens: int = 64
    max_tokens: int = 512  # most max_tokens a request may ask for
    max_input_tokens: int = 512


@dataclass(frozen=True)
class Parsed:
    """A request ready for the worker."""

    question: Question
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with usage


def _check_model(body: dict, limits: Limits) -> None:
    model = body.get("model")
    if model is None:
        raise ApiError(400, "missing field 'model'; send the name from GET /v1/models", "model")
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model")
    if model != limits.model:
        raise ApiError(404, f"the model {model!r} does not exist; this server has {limits.model!r}", "model",
                       "model_not_found")


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{name}' must be a number", name)
    if not math.isfinite(value):
        raise ApiError(400, f"'{name}' is {value}; give a finite number", name)
    if value > high or value < low or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ApiError(400, f"'{name}' is {value}; it must be in {bound}", name)
    return float(value)


def _max_tokens(body: dict, names: tuple[str, ...], limits: Limits) -> int:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"'{name}' must be an integer", name)
        if value < 1:
            raise ApiError(400, f"'{name}' is {value}; it must be at least 1", name)
        if value > limits.max_tokens:
            raise ApiError(400, f"'{name}' is {value}; this server allows at most {limits.max_tokens}", name)
        return value
    return limits.default_max_tokens


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of strings", "stop")
    for s in stop:
        _check_text(s, "stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise ApiError(400, f"'stop' has {len(stop)} strings; at most {MAX_STOP_STRINGS}", "stop")
    return tuple(s for s in stop if s)


def _check_text(text: str, param: str) -> None:
    """Refuse text that is not Unicode text (a lone surrogate such as "\\ud800" is valid JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError(400, f"'{param}' holds a character that is not text ({error.reason} at {error.start}); "
                            "send UTF-8 text", param) from None


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false", name)
    return value


def _common(body: dict, text: str, limits: Limits, max_token_names: tuple[str, ...]) -> Parsed:
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise ApiError(400, f"'n' is {n!r}; this server gives one answer per request (n = 1)", "n")
    _check_text(text, "messages" if "messages" in body else "prompt")
    explain = _flag(body, "explain")
    if explain and limits.method not in RATIONALE_METHODS:
        raise ApiError(400, f"this student was trained with method {limits.method!r}, which has no rationale; "
                            "ask without 'explain'", "explain")
    if len(text) > limits.max_input_tokens * MAX_CHARS_PER_TOKEN:
        raise ApiError(400, f"the question is longer than the student reads ({limits.max_input_tokens} tokens); "
                            "shorten it", "messages", "context_length_exceeded")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "stream_options")
    question = Question(text=text, explain=explain, max_tokens=_max_tokens(body, max_token_names, limits),
                        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
                        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), stop=_stop(body))
    return Parsed(question, _flag(body, "stream"), bool(options.get("include_usage")))


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ApiError(400, f"{where}: only text parts are understood by this student", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ApiError(400, f"{where}: 'content' must be a string or a list of text parts", "messages")


def parse_chat(body: Any, limits: Limits) -> Parsed:
    """A ``/v1/chat/completions`` body: the question is the last ``user`` message's text."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    _check_model(body, limits)
    messages = body.get("messages")
    if messages is None:
        raise ApiError(400, "missing field 'messages'; send [{\"role\": \"user\", \"content\": \"...\"}]", "messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    question = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a 'role'", "messages")
        if message["role"] == "user":
            question = _content_text(message.get("content"), f"messages[{i}]")
    if question is None or not question.strip():
        raise ApiError(400, "no 'user' message with text; the student answers the last user message", "messages")
    return _common(body, question, limits, ("max_completion_tokens", "max_tokens"))


def parse_completion(body: Any, limits: Limits) -> Parsed:
    """A ``/v1/completions`` body: the question is ``prompt`` (a string, or a list of one)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    _check_model(body, limits)
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "missing field 'prompt'", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (one question per request)", "prompt")
    if not prompt.strip():
        raise ApiError(400, "'prompt' is empty; send a question", "prompt")
    return _common(body, prompt, limits, ("max_tokens",))
