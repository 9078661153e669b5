"""A run's metrics.json as export and the model card read it: each figure they show is a number.

metrics.json is written by the pipeline and the export, but it is a file a user can edit or
break; a string where a card wants an accuracy, or ``"exports": []``, is one line naming the
entry, not a traceback halfway through an export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_distill.errors import DistillError
from mlx_distill.pipeline import RunFolder

# Figures at the top of metrics.json.
_FIGURES = ("student_test_accuracy", "student_seconds_per_answer", "student_parameters")
# Sections (one object each) and the figures in them.
_SECTIONS = {
    "data": ("train", "validation", "test"),
    "teacher": ("accepted", "done"),
    "teacher_test": ("accuracy",),
    "train": ("steps", "best_validation_accuracy"),
}
# Tables (an object of objects, one per export or baseline) and the figures in each entry.
_TABLES = {
    "exports": ("bits", "group_size", "weight_bytes", "float_weight_bytes", "seconds_per_answer",
                "float_seconds_per_answer", "test_accuracy", "float_test_accuracy", "test_total", "agreement"),
    "baselines": ("test_accuracy",),
}


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_checked_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The run's metrics.json (``{}`` when there is none yet), its figures checked.

    Raises:
        DistillError: one line naming the entry that is not what the run and the export write,
            and the fix.
    """
    run = RunFolder(Path(run_dir))
    metrics = run.read_metrics()

    def refuse(where: str, value: Any, wanted: str) -> None:
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DistillError(f"{run.metrics_path}: {where} is {shown}, not {wanted}; fix or delete that entry "
                           "(the run or the export writes it again)")

    def numbers(entry: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
        for key in keys:
            if not _is_number(entry.get(key)):
                refuse(f"{where}{key}", entry[key], "a number")

    numbers(metrics, _FIGURES, "")
    for section, keys in _SECTIONS.items():
        entry = metrics.get(section, {})
        if not isinstance(entry, dict):
            refuse(section, entry, "an object")
        numbers(entry, keys, f"{section}.")
    for table, keys in _TABLES.items():
        entries = metrics.get(table, {})
        if not isinstance(entries, dict):
            refuse(table, entries, "an object (one entry per name)")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                refuse(f"{table}.{name}", entry, "an object")
            numbers(entry, keys, f"{table}.{name}.")
    return metrics
