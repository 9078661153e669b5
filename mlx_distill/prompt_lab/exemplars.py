"""Few-shot exemplar sets built from the task's own training rows, and the prompt text they make.

A candidate set takes rows with a reference rationale (the data set's own, or the teacher's own
gold-agreeing ones when bootstrapping) and varies their labels and, for multiple choice, the
position of the right choice, so the teacher sees no single label or letter favoured.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from mlx_distill.methods import COT_ANSWER_PHRASE
from mlx_distill.teacher import PromptTemplate, format_question

_CHOICE_LINE = re.compile(r"^\(([a-z])\)\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ExemplarRow:
    """A training row that can be shown as a worked example."""

    id: str
    question: str
    label: str
    rationale: str
    position: str  # the right choice's letter, or "" when the question is not multiple choice


def answer_position(question: str, label: str, choices: tuple[str, ...] = ()) -> str:
    """The letter of ``label`` among the question's choices ("" when it has none)."""
    pairs = [(chr(ord("a") + i), c) for i, c in enumerate(choices)] or _CHOICE_LINE.findall(question)
    for letter, text in pairs:
        if text.strip().lower() == label.strip().lower():
            return letter
    return ""


def exemplar_rows(examples: list, rationales: dict[str, str] | None = None) -> list[ExemplarRow]:
    """Rows that have a rationale: the example's own, or ``rationales[id]`` when given."""
    rows = []
    for example in examples:
        rationale = (rationales or {}).get(example.id) if rationales is not None else example.rationale
        if rationale and rationale.strip() and example.label:
            rows.append(ExemplarRow(example.id, example.input, example.label, rationale.strip(),
                                    answer_position(example.input, example.label, example.choices)))
    return rows


def candidate_sets(rows: list[ExemplarRow], count: int, size: int, seed: int) -> list[list[ExemplarRow]]:
    """``count`` sets of ``size`` rows each, every set spreading labels and answer positions.

    Each set is drawn greedily from a seeded shuffle: a row is taken when its label and its answer
    position are not in the set yet, then the remaining places are filled with whatever is left.
    """
    rng = random.Random(seed)
    sets = []
    for _ in range(count):
        pool = rows[:]
        rng.shuffle(pool)
        chosen: list[ExemplarRow] = []
        for row in pool:
            if len(chosen) == size:
                break
            if all(row.label != c.label and (not row.position or row.position != c.position) for c in chosen):
                chosen.append(row)
        for row in pool:
            if len(chosen) == size:
                break
            if row not in chosen:
                chosen.append(row)
        sets.append(chosen)
    return sets


def _answer_text(row: ExemplarRow) -> str:
    shown = f"({row.position}) {row.label}" if row.position else row.label
    rationale = row.rationale.rstrip()
    if COT_ANSWER_PHRASE.lower() in rationale.lower():
        return rationale
    if not rationale.endswith((".", "!", "?")):
        rationale += "."
    return f"{rationale} {COT_ANSWER_PHRASE} {shown}."


def prompt_with_exemplars(template: PromptTemplate, task: str, rows: list[ExemplarRow]) -> str:
    """Prompt-file text: ``template``'s instruction and query around ``rows`` as worked examples."""
    blocks = [template.instruction]  # the first block is always the instruction, even an empty one
    for row in rows:
        question = template.query.replace("{input}", format_question(task, row.question))
        question = question.replace("{answer}", row.label)
        blocks.append(f"{question}\nA: {_answer_text(row)}")
    blocks.append(f"{template.query}\nA:")
    return "\n---\n".join(blocks) + "\n"
