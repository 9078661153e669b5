"""Progress events: the one stream every stage reports through.

Stages call ``on_event(event)``; the CLI progress printer, the run folder's ``events.jsonl``
and the terminal UI are subscribers. Events are frozen dataclasses with plain fields so they
round-trip through JSON lines (``to_json`` / ``event_from_json``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# The stages of a run, in order.
STAGES = ("data", "teacher", "train", "evaluate", "export")


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    """Base of every event; ``time`` is seconds since the epoch when it was made."""

    time: float = field(default_factory=_now, kw_only=True)
    # The distributed rank that sent it (0 on a single machine).
    rank: int = field(default=0, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True)
class StageStarted(Event):
    stage: str
    detail: str = ""


@dataclass(frozen=True)
class StageFinished(Event):
    stage: str
    seconds: float = 0.0
    detail: str = ""
    skipped: bool = False  # True when the run folder already held this stage's result


@dataclass(frozen=True)
class Log(Event):
    message: str
    level: str = "info"  # info | warning | error


@dataclass(frozen=True)
class Paused(Log):
    """The run waits between batches (on battery below ``run.pause_below_battery``)."""

    battery_percent: int | None = None


@dataclass(frozen=True)
class Resumed(Log):
    """A paused run goes on: power returned ("power") or the user asked ("user")."""

    reason: str = "power"


@dataclass(frozen=True)
class MemoryReport(Event):
    """Memory as MLX sees it; bytes."""

    stage: str
    active: int
    peak: int
    total: int


@dataclass(frozen=True)
class TeacherLoaded(Event):
    model: str
    dtype: str
    weight_bytes: int
    seconds: float


@dataclass(frozen=True)
class TeacherProgress(Event):
    done: int
    total: int
    accepted: int
    parse_failures: int
    generated_tokens: int
    generation_tps: float  # generated tokens per second over the stage so far
    prompt_tps: float
    eta_seconds: float | None = None
    # The latest finished example, for the live view.
    latest_id: str = ""
    latest_input: str = ""
    latest_rationale: str = ""
    latest_answer: str = ""
    latest_accepted: bool = False


@dataclass(frozen=True)
class TeacherReleased(Event):
    peak_bytes: int
    active_bytes_after: int


@dataclass(frozen=True)
class TrainStep(Event):
    step: int
    total_steps: int
    loss: float
    label_loss: float
    rationale_loss: float | None  # None for methods with no rationale task
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float | None = None
    epoch: float = 0.0
    candidate: str = ""  # which of a run's candidates (train.select) trains; "" for a lone run


@dataclass(frozen=True)
class EvalResult(Event):
    step: int
    split: str  # validation | test
    accuracy: float
    correct: int
    total: int
    best: bool = False  # the best validation accuracy so far
    candidate: str = ""  # which of a run's candidates was scored; "" for a lone run


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str
    best: bool = False


@dataclass(frozen=True)
class Finished(Event):
    stage: str  # a stage name, or "run"
    stopped: bool = False  # True when the user stopped it; finished work is kept
    summary: dict[str, Any] = field(default_factory=dict)
    resume_hint: str = ""


@dataclass(frozen=True)
class CandidateChosen(Event):
    """The candidate a run exports, chosen on validation (``train.select``)."""

    candidate: str
    label: str
    reason: str


@dataclass(frozen=True)
class Failed(Event):
    stage: str
    error: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        StageStarted,
        StageFinished,
        Log,
        Paused,
        Resumed,
        MemoryReport,
        TeacherLoaded,
        TeacherProgress,
        TeacherReleased,
        TrainStep,
        EvalResult,
        CheckpointSaved,
        Finished,
        CandidateChosen,
        Failed,
    )
}

OnEvent = Callable[[Event], None]
ShouldStop = Callable[[], bool]


def ignore_event(event: Event) -> None:
    """The do-nothing default for ``on_event``."""


def never_stop() -> bool:
    """The do-nothing default for ``should_stop``."""
    return False


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict`` output; unknown fields (from newer versions) are dropped."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))


def fan_out(*subscribers: OnEvent | None) -> OnEvent:
    """One ``on_event`` that calls every given subscriber in order (``None`` entries skipped)."""
    active = [s for s in subscribers if s is not None]

    def on_event(event: Event) -> None:
        for subscriber in active:
            subscriber(event)

    return on_event
