"""Turn a teacher's raw continuation into (rationale, answer) per task.

The output is first cut at the next invented exemplar (``Q:``, ``Premise:``...), then split at the
answer phrase ``So the answer is`` (also ``The answer is`` / ``Therefore, the answer is``): the
text before it is the rationale, the text after it the answer, normalised per task:

* ``cqa``, and any task whose input holds ``Answer Choices: (a) ... (b) ...``: ``(b) cupboard`` /
  ``(b)`` / ``b`` / ``cupboard`` -> the choice text;
* ``svamp``: ``( 12 - 5 ) = 7`` -> the equation ``( 12 - 5 )``; a bare number stays a number;
* ``esnli`` / ``anli``: the label word ``entailment`` / ``neutral`` / ``contradiction``;
* anything else: the answer sentence without its final full stop.

When nothing comes before the answer phrase, the reasoning written after the answer sentence
("The answer is (c) bird. Birds have feathers...") is the rationale (reason-after-answer). For
multiple choice, a first line that is only an answer (``(c) bird``) is the answer, the rest the
rationale. ``restates_answer`` tells a rationale that says nothing beyond the question and the
answer ("A cod is a fish.").

A failure is a value (``parse_ok=False``), never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

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


# A label before reasoning written after the answer ("Reasoning: ...").
_REASON_LABEL = re.compile(r"^\s*(?:reasoning|explanation|rationale|because|why)\s*:?\s*", re.IGNORECASE)
# A first line that is only a multiple-choice answer: "(c) bird", "c)", "(c)".
_ANSWER_LINE = re.compile(r"^\s*\(?\s*([a-z])\s*\)\s*[^\n]{0,60}$", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z'-]+")
# Words that carry no reasoning of their own.
_FUNCTION_WORDS = frozenset(
    "a an the is are was were be been it its this that these those so therefore thus hence answer correct "
    "choice option which what kind type group class of in on to and or as for with by from because since "
    "animal animals like such one best described would you put belong belongs called".split())
MIN_NEW_WORDS = 2


@dataclass(frozen=True)
class ParsedOutput:
    rationale: str
    answer: str
    parse_ok: bool
    thinking: bool = False  # a <think>...</think> block was stripped before parsing


# A thinking model's reasoning block (Qwen3, DeepSeek-R1 distills): closed, or cut off by max_tokens.
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
_THINK_CLOSE = re.compile(r"^.*?</think>", re.DOTALL)  # a template that opened <think> itself


def strip_thinking(raw: str) -> tuple[str, bool]:
    """``raw`` without its ``<think>...</think>`` blocks, and whether there were any."""
    text, count = _THINK_BLOCK.subn("", raw)
    if "</think>" in text:  # the opening tag was in the prompt (the chat template wrote it)
        text, closed = _THINK_CLOSE.subn("", text, count=1)
        count += closed
    return text, count > 0


def restates_answer(rationale: str, question: str, answer: str) -> bool:
    """True when the rationale adds fewer than ``MIN_NEW_WORDS`` words that are not in the
    question, the answer or a list of function words ("A cod is a fish." for "cod" -> "fish")."""
    known = set(_WORD.findall(f"{question} {answer}".lower())) | _FUNCTION_WORDS
    known |= {w + "s" for w in known} | {w.rstrip("s") for w in known}
    new = {w for w in _WORD.findall(rationale.lower()) if w not in known}
    return len(new) < MIN_NEW_WORDS


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
    # "(c) fish" where (c) is not fish: the text wins (small models' letters follow position bias).
    text = CHOICE_LETTER.sub(" ", answer).strip().lower()
    for choice in choices:
        if text == choice.lower():
            return choice
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


def _without_answer_sentences(text: str) -> str:
    """The text with every sentence that holds the answer phrase removed."""
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    return " ".join(s.strip() for s in sentences if s.strip() and not ANSWER_PHRASE.search(s)).strip()


def _after_answer(text: str, answer_end: int) -> str:
    """The reasoning written after the answer sentence (its label and any restated answer removed)."""
    rest = text[answer_end:].strip().split("\n", 1)
    first_line_rest = rest[0]
    stop = re.search(r"\.(?!\d)", first_line_rest)
    after = (first_line_rest[stop.end():] if stop else "") + ("\n" + rest[1] if len(rest) > 1 else "")
    return _without_answer_sentences(_REASON_LABEL.sub("", after.strip()))


def parse_output(task: str, raw: str, choices: tuple[str, ...] = ()) -> ParsedOutput:
    """Split a raw teacher continuation into rationale and task answer (any thinking block
    stripped first: the rationale is what the model says after it)."""
    unthought, thinking = strip_thinking(raw)
    if thinking:
        return replace(parse_output(task, unthought, choices), thinking=True)
    text, _ = cut_at_stop(raw)
    text = text.strip()
    if choices:
        first, _, rest = text.partition("\n")
        if _ANSWER_LINE.match(first) and not ANSWER_PHRASE.search(first):
            answer = parse_cqa(first.strip(), choices)
            if answer is not None:
                rationale = _without_answer_sentences(_REASON_LABEL.sub("", rest.strip()))
                return ParsedOutput(rationale=rationale, answer=answer, parse_ok=True)
    match = ANSWER_PHRASE.search(text)
    if match is None:
        return ParsedOutput(rationale=text, answer="", parse_ok=False)
    rationale = text[: match.start()].strip()
    if not rationale:
        rationale = _after_answer(text, match.end())
    sentence = _answer_sentence(text[match.end():])
    if task == "cqa" or choices:
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
