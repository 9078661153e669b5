"""The recipe's vocabulary: training methods, task prefixes, the CoT answer phrase, rationale filters.

A leaf module: everything may import it, and it imports nothing of ours. The two task prefixes
come from Distilling step-by-step (arXiv 2305.02301; the authors' run.py uses ``predict: `` and
``explain: ``); the CoT target follows arXiv 2212.08410 ("<rationale> So the answer is <label>").
"""

from __future__ import annotations

# step-by-step: two tasks, one T5 (the paper's method). finetune: gold labels only. distill:
# teacher labels only. cot: one target, the rationale then the answer.
METHODS = ("step-by-step", "finetune", "distill", "cot")
DEFAULT_METHOD = "step-by-step"
# Methods whose training rows need rationales (from the teacher or the data set).
RATIONALE_METHODS = ("step-by-step", "cot")

# Where step-by-step labels come from, and where rationales come from.
LABEL_SOURCES = ("gold", "teacher")
# paper-palm / paper-gpt-neox: the Distilling step-by-step authors' published teacher outputs.
RATIONALE_SOURCES = ("teacher", "human", "none", "paper-palm", "paper-gpt-neox")

# Which teacher records keep their rationale: gold agrees with the label; all keeps every
# parsed answer; teacher keeps the majority answer of several samples.
FILTERS = ("gold", "all", "teacher")

PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "
COT_ANSWER_PHRASE = "So the answer is"

# Questions the teacher generates for together (config teacher.batch_size, `generate --batch-size`).
TEACHER_BATCH_SIZE = 16

# Inputs are cut to this many tokens, EOS included, in training and at inference alike.
MAX_INPUT_TOKENS = 512

# Answer length limits at evaluation and chat: a cot answer carries its rationale.
ANSWER_MAX_TOKENS = 64
COT_MAX_TOKENS = 256
RATIONALE_MAX_TOKENS = 256


def predict_prompt(question: str) -> str:
    """The student's answer task (the only one that runs at inference)."""
    return PREDICT_PREFIX + question


def explain_prompt(question: str) -> str:
    """The student's rationale task (step-by-step students only)."""
    return EXPLAIN_PREFIX + question


def cot_target(rationale: str | None, label: str) -> str:
    """The ``cot`` method's single target: the rationale, then the answer phrase and the label."""
    if rationale and rationale.strip():
        return f"{rationale.strip()} {COT_ANSWER_PHRASE} {label}"
    return f"{COT_ANSWER_PHRASE} {label}"


def parse_cot_answer(text: str) -> str:
    """The answer after the last "So the answer is" in a chain-of-thought output (whole text if absent)."""
    index = text.rfind(COT_ANSWER_PHRASE)
    if index < 0:
        return text.strip()
    answer = text[index + len(COT_ANSWER_PHRASE) :].strip()
    return answer[:-1].strip() if answer.endswith(".") else answer


def answer_of(method: str, generated: str) -> str:
    """The answer part of a student's output (``cot`` outputs end with "So the answer is …")."""
    return parse_cot_answer(generated) if method == "cot" else generated.strip()


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` (empty ones ignored), and whether one was found."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def answer_max_tokens(method: str, cot_max_tokens: int = COT_MAX_TOKENS,
                      answer_max_tokens: int = ANSWER_MAX_TOKENS) -> int:
    """How many tokens an answer of this method may take (``cot`` answers carry their rationale)."""
    return cot_max_tokens if method == "cot" else answer_max_tokens
