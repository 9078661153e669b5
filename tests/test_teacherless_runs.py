"""A run whose training reads no teacher output never resolves, checks or loads a teacher (#23 item 1),
and teacher labels never fall back to gold labels unless asked (#23, label_fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.data import Example, RationaleRecord
from mlx_distill.errors import DistillError
from mlx_distill.testing.cli_runner import run_cli
from mlx_distill.train import TrainConfig
from mlx_distill.train.batches import build_texts


def _config(tmp_path: Path, student: Path, task: Path, **train) -> Path:
    # No [teacher] section: the catalog's default teacher (too large for this machine) would be
    # refused by the memory check if anything looked at it.
    config = {
        "name": "run",
        "runs_dir": str(tmp_path / "runs"),
        "task": {"name": "jsonl", "data": str(task)},
        "train": {"student": str(student), "lr": 3e-3, "batch_size": 8, "max_steps": 2, "eval_every": 2,
                  "log_every": 1, "baselines": [], **train},
    }
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.mark.parametrize("train", [{"method": "finetune"}, {"rationale_source": "human"}])
def test_a_run_that_reads_no_teacher_output_needs_no_teacher(tmp_path, tiny_student, small_synthetic_task, train):
    result = run_cli("run", _config(tmp_path, tiny_student, small_synthetic_task, **train), "--quiet")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "run"
    detail = json.loads((run / "state.json").read_text())["stages"]["teacher"]["detail"]
    assert detail.startswith("skipped: training reads no teacher output")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    said = [e for e in events if "training reads no teacher output" in json.dumps(e)]
    assert len(said) == 1
    assert not (run / "rationales.jsonl").exists()
    assert "| model | `-` |" in (run / "report.md").read_text()


def test_teacher_labels_drop_a_row_without_a_teacher_answer_unless_gold_fallback_is_asked():
    examples = [Example("a", "q1", "yes"), Example("b", "q2", "no"), Example("c", "q3", "no")]
    records = {"a": RationaleRecord("a", "teacher a", "yes", accepted=True),
               "b": RationaleRecord("b", "", "", accepted=False, parse_ok=False)}
    rows, stats = build_texts(examples, "distill", rationales=records)
    assert [(r.id, r.target) for r in rows] == [("a", "yes")]
    assert (stats.dropped, stats.gold_fallbacks, stats.no_teacher_answer) == (2, 0, 2)
    rows, stats = build_texts(examples, "step-by-step", rationales=records, label_source="teacher",
                              label_fallback="gold")
    assert [r.target for r in rows] == ["yes", "no", "no"] and stats.gold_fallbacks == 2
    with pytest.raises(DistillError, match="--label-fallback gold"):
        build_texts(examples[1:], "distill", rationales=records)


def test_label_fallback_is_checked():
    with pytest.raises(DistillError, match="label_fallback 'maybe' is not one of drop, gold"):
        TrainConfig(label_fallback="maybe").validate()
