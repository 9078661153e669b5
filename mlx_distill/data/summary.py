"""What a task's data holds, in numbers: for the data check (``mlx-distill data CONFIG``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping

from mlx_distill.data.records import Example, RationaleRecord, TaskData

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Coverage:
    """How many training examples a rationale source gives a usable rationale."""

    source: str
    with_rationale: int
    total: int
    agreeing: int | None = None  # teacher sources: answers that agree with the gold label
    note: str = ""


@dataclass(frozen=True)
class LongInput:
    split: str
    id: str
    tokens: int


def label_counts(examples: list[Example], top: int = 8) -> tuple[list[tuple[str, int]], int]:
    """The ``top`` most frequent labels with their counts, and how many distinct labels there are."""
    counts = Counter(e.label for e in examples)
    return counts.most_common(top), len(counts)


def answer_positions(examples: list[Example]) -> list[tuple[str, int]]:
    """For multiple-choice examples: how often the answer is choice (a), (b), ...; empty otherwise."""
    counts = Counter(chr(ord("a") + e.choices.index(e.label)) for e in examples if e.label in e.choices)
    return sorted(counts.items())


def human_coverage(examples: list[Example]) -> Coverage:
    return Coverage("human (the dataset's own)", sum(1 for e in examples if e.rationale), len(examples))


def record_coverage(source: str, examples: list[Example], records: Mapping[str, RationaleRecord],
                    note: str = "") -> Coverage:
    """Coverage of teacher records (ours or the paper's) over ``examples``: accepted, non-empty rationales."""
    mine = [records[e.id] for e in examples if e.id in records]
    usable = sum(1 for r in mine if r.accepted and r.rationale.strip())
    agreeing = sum(1 for r in mine if r.agrees)
    return Coverage(source, usable, len(examples), agreeing, note)


def input_lengths(data: TaskData, count_tokens: Callable[[list[str]], list[int]], limit: int,
                  top: int = 3) -> tuple[list[LongInput], dict[str, int]]:
    """The ``top`` longest inputs over all splits, and per split how many are longer than ``limit``
    tokens (the student reads only their beginning)."""
    found, over = [], {}
    for split in SPLITS:
        examples = getattr(data, split)
        lengths = count_tokens([e.input for e in examples]) if examples else []
        found.extend(LongInput(split, e.id, n) for e, n in zip(examples, lengths))
        over[split] = sum(1 for n in lengths if n > limit)
    found.sort(key=lambda item: -item.tokens)
    return found[:top], over
