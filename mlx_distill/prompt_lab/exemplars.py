"""Candidate few-shot sets drawn from the task's own training rows.

A candidate set takes rows with a rationale (the data set's own, or the teacher's own
gold-agreeing ones when bootstrapping) and spreads their labels and, for multiple choice, the
position of the right choice, so the teacher sees no single label or position favoured. The
prompt text is the teacher's own exemplar format (``mlx_distill.teacher.exemplar_prompt_text``),
the one the teacher stage uses for a task's rows.
"""

from __future__ import annotations

import dataclasses
import random

from mlx_distill.teacher import choices_in_input


def answer_position(example) -> int:
    """The index of the right choice among the question's choices (-1 when it has none)."""
    choices = [c.lower() for c in (example.choices or choices_in_input(example.input))]
    label = example.label.strip().lower()
    return choices.index(label) if label in choices else -1


def with_rationales(examples: list, rationales: dict[str, str] | None = None) -> list:
    """The rows that have a rationale: their own, or ``rationales[id]`` in its place when given."""
    rows = []
    for example in examples:
        rationale = rationales.get(example.id) if rationales is not None else example.rationale
        if rationale and rationale.strip() and example.label.strip():
            rows.append(dataclasses.replace(example, rationale=rationale.strip()))
    return rows


def candidate_sets(rows: list, count: int, size: int, seed: int) -> list[list]:
    """``count`` sets of ``size`` rows each, every set spreading labels and answer positions.

    Each set is drawn greedily from its own seeded shuffle: a row is taken when neither its label
    nor its answer position is in the set yet; the places left are filled with the rows left.
    """
    rng = random.Random(seed)
    sets = []
    for _ in range(count):
        pool = rows[:]
        rng.shuffle(pool)
        chosen: list = []
        for strict in (True, False):
            for row in pool:
                if len(chosen) == size:
                    break
                if row in chosen:
                    continue
                position = answer_position(row)
                if strict and any(row.label == c.label or (position >= 0 and position == answer_position(c))
                                  for c in chosen):
                    continue
                chosen.append(row)
        sets.append(chosen)
    return sets
