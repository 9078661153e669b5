"""What makes a finished stage reusable: fingerprints of its inputs, the changed-config check, --redo.

A stage's fingerprint is a digest of the config values (and data file sizes) its output depends
on. A rerun skips a done stage with the same fingerprint, refuses one made with other settings
(naming what changed), and ``--redo STAGE`` discards that stage and every later one on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from mlx_distill.config import RunConfig, TrainConfig
from mlx_distill.errors import DistillError
from mlx_distill.events import STAGES
from mlx_distill.pipeline.runfolder import RunFolder, read_run_config


def fingerprint(value: Any) -> str:
    """A short digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_signature(path: str) -> list:
    root = Path(path)
    if root.is_file():
        return [(root.name, root.stat().st_size)]
    if root.is_dir():
        return [(str(p.relative_to(root)), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()]
    return []


# Teacher keys added after the first release, with their defaults: left at the default they are
# left out of the fingerprint, so runs made before they existed are not taken as changed.
_LATER_TEACHER_KEYS = {"reject_restating": False}
_LATER_TRAIN_KEYS = {"paper_rationales": ""}


def stage_inputs(config: RunConfig) -> dict[str, dict[str, Any]]:
    """The config values (and data file sizes) each stage's result depends on, by stage."""
    data = {"task": dataclasses.asdict(config.task), "files": _files_signature(config.task.data)}
    # keep_restating changes what training takes from the records, not the records: a train input.
    teacher = {k: v for k, v in dataclasses.asdict(config.teacher).items()
               if k not in ("evaluate_test", "keep_restating")
               and not (k in _LATER_TEACHER_KEYS and v == _LATER_TEACHER_KEYS[k])}
    defaults = TrainConfig().to_dict()
    # Trainer keys left at their defaults are left out, so adding a setting to TrainConfig does not
    # make every earlier run look changed.
    train = {k: v for k, v in config.to_dict()["train"].items() if k not in defaults or v != defaults[k]}
    train = {k: v for k, v in train.items() if not (k in _LATER_TRAIN_KEYS and v == _LATER_TRAIN_KEYS[k])}
    if config.teacher.keep_restating:
        train["keep_restating"] = True
    uses_teacher = config.teacher.enabled and config.train.uses_teacher
    inputs = {
        "data": data,
        "teacher": {"data": data, "teacher": teacher},
        "train": {"data": data, "train": train, "teacher": teacher if uses_teacher else None},
    }
    inputs["evaluate"] = {"train": inputs["train"], "teacher_test": config.teacher.evaluate_test}
    inputs["export"] = {"train": inputs["train"]}
    return inputs


def stage_fingerprints(config: RunConfig) -> dict[str, str]:
    return {stage: fingerprint(values) for stage, values in stage_inputs(config).items()}


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} → {b!r}")
    return changed


def check_unchanged(folder: RunFolder, config: RunConfig, redo: str | None) -> None:
    """Refuse to continue a run whose started stages were made with other settings.

    Raises:
        DistillError: naming the stage and what changed, with the ``--redo`` that discards it.
    """
    old = read_run_config(folder.path)
    if not old:
        return
    new = config.to_dict()
    state = folder.read_state()["stages"]
    fingerprints = stage_fingerprints(config)
    for stage in STAGES:
        made_with = state.get(stage, {}).get("fingerprint")
        if made_with in (None, fingerprints[stage]):
            continue
        if redo is not None and STAGES.index(stage) >= STAGES.index(redo):
            continue
        sections = ("task", "teacher", "train")
        changes = _changed_keys({k: old.get(k) for k in sections}, {k: new.get(k) for k in sections})
        what = "; ".join(changes[:3]) or "the data files changed"
        raise DistillError(
            f"run '{folder.path.name}' has a {stage} stage made with other settings ({what}); "
            f"use a new run name, or rerun with --redo {stage} to discard it and what follows"
        )


def discard_from(folder: RunFolder, stage: str, baselines: list[str]) -> None:
    """Forget ``stage`` and every later stage, deleting their outputs (``--redo``)."""
    outputs = {
        "teacher": [folder.rationales_path, folder.teacher_test_path],
        "train": [folder.train_dir, folder.candidates_dir] + [folder.baseline_dir(m) for m in baselines],
        "evaluate": [folder.predictions_path],
        "export": [folder.student_dir],
    }
    state = folder.read_state()
    for name in STAGES[STAGES.index(stage):]:
        state["stages"].pop(name, None)
        for path in outputs.get(name, []):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    folder.write_state(state)
