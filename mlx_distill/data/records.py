"""The data types every task loader produces and the trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One task example as the student sees it (no task prefix)."""

    id: str
    input: str
    label: str
    rationale: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskData:
    """A task's splits. ``notes`` says how splits were made (carved, joined rationales, ...)."""

    task: str
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RationaleRecord:
    """One line of a teacher rationale file (see CONTRACTS.md for the schema)."""

    id: str
    rationale: str
    answer: str
    teacher: str = ""
    prompt_hash: str = ""
    raw: str = ""
    agrees: bool | None = None
    accepted: bool = True
    parse_ok: bool = True
    restates_answer: bool = False  # the rationale only restates the answer (teacher.parse.restates_answer)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


# A loaded example together with where it came from ("file:line"), for error messages.
Row = tuple[Example, str]
