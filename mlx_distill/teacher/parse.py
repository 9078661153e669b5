"""Turn a teacher's raw continuation into (rationale, answer) per task.

The output is first cut at the next invented exemplar (``Q:``, ``Premise:``...), then split at the
answer phrase ``So the answer is`` (also ``The answer is`` / ``Therefore, the answer is``): the
text before it is the rationale, the text after it the answer, normalised per task:

* ``cqa``: ``(b) cupboard`` / ``(b)`` / ``cupboard`` -> the choice text from ``Example.choices``;
* ``svamp``: ``( 12 - 5 ) = 7`` -> the equation ``( 12 - 5 )``; a bare number stays a number;
* ``esnli`` / ``anli``: the label word ``entailment`` / ``neutral`` / ``contradiction``;
* anything else: the answer sentence without its final full stop.

A failure is a value (``parse_ok=False``), never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlx_distill.metrics import safe_arithmetic
from mlx_distill.teacher.prompt import NLI_TASKS, cut_at_stop

ANSWER_PHRASE = re.compile(
    r"(?:(?:so|therefore|thus|hence)[,:]?\s+)?(?:the\s+)?(?:final\s+|correct\s+)?answer\s+is\b\s*:?\s*",
    re.IGNORECASE,
)
CHOICE_LETTER = re.compile(r"\(\s*([a-zA-Z])\s*\)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
NLI_WORDS = (
    ("entailment", re.compile(r"\bentail(?:ment|s|ed)?\b", re.IGNORECASE)),
    ("contradiction", re.compile(r"\bcontradict(?:ion|s|ed|ory)?\b", re.IGNORECASE)),
    ("neutral", re.compile(r"\bneutral\b|\bneither\b|\bnot possible to tell\b|\bundetermined\b",
                           re.IGNORECASE)),
)


@dataclass(frozen=True)
class ParsedOutput:
    rationale: str
    answer: str
    parse_ok: bool


def _answer_sentence(after: str) -> str:
    """The answer text up to the end of its line, without the final full stop."""
    line = after.strip().split("\n", 1)[0].strip()
    # A full stop ends the sentence unless it is a decimal point.
    match = re.search(r"\.(?!\d)", line)
    if match is not None and match.start() > 0:
        line = line[: match.start()]
    return line.strip().strip("*_`\"' ").strip()


def parse_cqa(answer: str, choices: tuple[str, ...]) -> str | None:
    if not choices:
        return answer or None
    letter = CHOICE_LETTER.search(answer)
    if letter is not None:
        index = ord(letter.group(1).lower()) - ord("a")
        if 0 <= index < len(choices):
            return choices[index]
    lowered = answer.lower().strip()
    bare = re.fullmatch(r"([a-z])\)?", lowered)
    if bare is not None:
        index = ord(bare.group(1)) - ord("a")
        if 0 <= index < len(choices):
            return choices[index]
    for choice in choices:
        if lowered == choice.lower():
            return choice
    # The longest choice named in the answer (so "ice cream" beats "ice").
    named = [c for c in choices if re.search(rf"\b{re.escape(c.lower())}\b", lowered)]
    return max(named, key=len) if named else None


def _safe_value(expression: str) -> float | None:
    try:
        return safe_arithmetic(expression)
    except (ValueError, ZeroDivisionError, SyntaxError, TypeError, OverflowError):
        return None


def parse_svamp(answer: str) -> str | None:
    text = answer.replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/").strip()
    left = text.split("=", 1)[0].strip()
    if re.search(r"[+\-*/]", left.lstrip("-")) and _safe_value(left) is not None:
        return left
    numbers = NUMBER.findall(text.split("=", 1)[1] if "=" in text else text)
    if numbers:
        return numbers[0].replace(",", "")
    return None


def parse_nli(answer: str) -> str | None:
    found = [(m.start(), label) for label, pattern in NLI_WORDS if (m := pattern.search(answer))]
    return min(found)[1] if found else None


def parse_output(task: str, raw: str, choices: tuple[str, ...] = ()) -> ParsedOutput:
    """Split a raw teacher continuation into rationale and task answer."""
    text, _ = cut_at_stop(raw)
    text = text.strip()
    match = ANSWER_PHRASE.search(text)
    if match is None:
        return ParsedOutput(rationale=text, answer="", parse_ok=False)
    rationale = text[: match.start()].strip()
    sentence = _answer_sentence(text[match.end():])
    if task == "cqa":
        answer = parse_cqa(sentence, choices)
    elif task == "svamp":
        answer = parse_svamp(sentence)
    elif task in NLI_TASKS:
        answer = parse_nli(sentence)
    else:
        answer = sentence or None
    if answer is None:
        return ParsedOutput(rationale=rationale, answer=sentence, parse_ok=False)
    return ParsedOutput(rationale=rationale, answer=answer, parse_ok=True)
