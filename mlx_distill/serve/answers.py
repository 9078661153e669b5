"""Questions in, answers out: the batched answering path of `ask` and `answer` (`serve` decodes
continuously instead, in `mlx_distill.serve.worker`, with the same rules for texts and stops).

A question becomes the student's ``predict:`` input (and, when asked, its ``explain:`` input);
every input of a batch is decoded together by `mlx_distill.student.generate_tokens`, greedy rows
with the longest ``max_tokens`` of the batch and each row then cut to its own limit (greedy
decoding gives a row the same first tokens whatever the limit). Runs on the caller's thread:
the caller is the one thread that touches MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlx_distill.errors import DistillError
from mlx_distill.methods import (
    MAX_INPUT_TOKENS,
    RATIONALE_MAX_TOKENS,
    RATIONALE_METHODS,
    answer_of,
    cut_at_stop,
    explain_prompt,
    predict_prompt,
)
from mlx_distill.student import decode_tokens, encode_prompts, generate_tokens


@dataclass(frozen=True)
class Question:
    """One question and how to answer it."""

    text: str
    explain: bool = False  # also the student's rationale (explain: task, or a cot student's chain)
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """The student's answer to one `Question`."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    rationale: str | None = None
    truncated: bool = False  # the question was longer than the student reads and was cut


@dataclass(frozen=True)
class TooLong:
    """A question refused because it is longer than the student reads."""

    tokens: int  # at least this many (the count stops one past the limit)
    limit: int

    @property
    def message(self) -> str:
        return (f"the question is longer than the student reads ({self.limit} tokens with its task prefix); "
                "shorten it")


@dataclass(frozen=True)
class _Row:
    question: int
    part: str  # "answer" or "rationale"
    prompt: str
    max_tokens: int


def check_explainable(method: str) -> None:
    """Refuse a rationale from a student whose method never learned one."""
    if method not in RATIONALE_METHODS:  # a cot student's rationale is its own answer text
        raise DistillError(f"this student was trained with method {method!r}, which has no rationale; "
                           f"ask without explain, or train a step-by-step student")


def _rows(method: str, questions: list[Question]) -> list[_Row]:
    rows = []
    for i, q in enumerate(questions):
        rows.append(_Row(i, "answer", predict_prompt(q.text), q.max_tokens))
        if q.explain and method == "step-by-step":
            rows.append(_Row(i, "rationale", explain_prompt(q.text), RATIONALE_MAX_TOKENS))
    return rows


def answer_batch(model: Any, tokenizer: Any, method: str, questions: list[Question], *,
                 max_input_tokens: int = MAX_INPUT_TOKENS, refuse_too_long: bool = False,
                 ) -> list[Answer | TooLong]:
    """Answer ``questions`` together, in one batch per (temperature, top_p).

    Args:
        model: The T5 student.
        tokenizer: Its tokenizer.
        method: The student's training method (``mlx_distill.json``): a ``cot`` answer is read
            from its chain of thought, and is its rationale.
        questions: The questions, without task prefixes.
        max_input_tokens: Inputs longer than this many tokens are cut (or refused). Default: ``512``.
        refuse_too_long: Refuse a question longer than ``max_input_tokens`` (`TooLong`, nothing
            generated) instead of answering from its beginning. Default: ``False``.

    Returns:
        An `Answer` (or `TooLong`) per question, in order.
    """
    rows = _rows(method, questions)
    ids, cut = encode_prompts(tokenizer, [r.prompt for r in rows], max_input_tokens)
    cut_questions = {rows[i].question for i in cut}
    prompt_tokens = [0] * len(questions)
    for row, row_ids in zip(rows, ids):
        prompt_tokens[row.question] += len(row_ids)
    if refuse_too_long:
        rows = [r for r in rows if r.question not in cut_questions]
    texts: dict[tuple[int, str], tuple[list[int], int]] = {}
    groups: dict[tuple[float, float], list[_Row]] = {}
    for row in rows:
        q = questions[row.question]
        groups.setdefault((q.temperature, q.top_p), []).append(row)
    for (temperature, top_p), group in groups.items():
        longest = max(r.max_tokens for r in group)
        outputs = generate_tokens(model, tokenizer, [r.prompt for r in group], max_tokens=longest,
                                  temperature=temperature, top_p=top_p, batch_size=len(group),
                                  max_input_tokens=max_input_tokens)
        for row, tokens in zip(group, outputs):
            texts[(row.question, row.part)] = (tokens[: row.max_tokens], row.max_tokens)
    results: list[Answer | TooLong] = []
    for i, q in enumerate(questions):
        if refuse_too_long and i in cut_questions:
            results.append(TooLong(prompt_tokens[i], max_input_tokens))
            continue
        tokens, limit = texts[(i, "answer")]
        generated = decode_tokens(tokenizer, tokens)
        rationale = None
        if q.explain and method == "cot":
            rationale = generated.strip()
        elif (i, "rationale") in texts:
            rationale = decode_tokens(tokenizer, texts[(i, "rationale")][0]).strip()
        text, stopped = cut_at_stop(answer_of(method, generated), q.stop)
        finish = "stop" if stopped or len(tokens) < limit else "length"
        used = len(tokens) + (len(texts[(i, "rationale")][0]) if (i, "rationale") in texts else 0)
        results.append(Answer(text, finish, prompt_tokens[i], used, rationale, truncated=i in cut_questions))
    return results
