"""What the pipeline needs to run on several ranks (``mlx.launch ... mlx_distill run``).

Rank 0 is the pipeline as on one machine: it owns the run folder (config, state, pid, events,
metrics, report). The other ranks walk the same stage loop with a ``WorkerFolder`` that writes
nothing, take rank 0's decision to run, skip or stop each stage, and join only the teacher and
train stages (data, evaluate and export run on rank 0 alone). Every stop decision inside a stage
is taken together (``any_stop``), so all ranks leave a stage the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from mlx_distill import distributed
from mlx_distill.events import Event, Finished, OnEvent, ShouldStop, StageFinished, StageStarted
from mlx_distill.pipeline.runfolder import RunFolder

# Stages every rank takes part in; the others run on rank 0 while the rest wait for its decision.
SHARED_STAGES = ("teacher", "train")


class WorkerFolder(RunFolder):
    """The run folder as a rank > 0 sees it: paths only; state, metrics and report are rank 0's."""

    def read_state(self) -> dict[str, Any]:
        return {"stages": {}}

    def write_state(self, state: dict[str, Any]) -> None:
        pass

    def set_stage(self, stage: str, **fields: Any) -> None:
        pass

    def read_metrics(self) -> dict[str, Any]:
        return {}

    def update_metrics(self, **values: Any) -> None:
        pass


def worker_events(on_event: OnEvent) -> OnEvent:
    """A rank > 0's events, marked with its rank; stage boundaries and the run's end are rank 0's."""
    marked = distributed.with_rank(on_event, distributed.rank())

    def send(event: Event) -> None:
        if not isinstance(event, (StageStarted, StageFinished, Finished)):
            marked(event)

    return send


def agree_on_stage(skip: bool, stop: bool) -> tuple[bool, bool]:
    """Rank 0's (skip, stop) for the next stage, on every rank."""
    if distributed.size() == 1:
        return skip, stop
    skip, stop = distributed.broadcast_json([skip, stop])
    return bool(skip), bool(stop)


def runs_here(stage: str) -> bool:
    """True if this rank works on ``stage`` (rank 0 works on all of them)."""
    return distributed.is_main() or stage in SHARED_STAGES


def any_stop(should_stop: ShouldStop, result: Any = None) -> bool:
    """True on every rank if any rank was asked to stop or its ``result`` says it stopped."""
    local = bool(getattr(result, "stopped", False)) or bool(should_stop())
    return distributed.any_rank(local) if distributed.size() > 1 else local


def share_rationales(records: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Rank 0's rationale records on every rank (the merged file is on rank 0's disk only)."""
    if distributed.size() == 1:
        return records
    plain = None
    if distributed.is_main() and records is not None:
        plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else dict(v) for k, v in records.items()}
    return distributed.broadcast_json(plain)


def worker_folder(path: Path) -> WorkerFolder:
    return WorkerFolder(Path(path))
