"""report.md: how the student compares with its teacher (and the baselines) on the run's test questions.

Every figure comes from metrics.json, which the stages wrote; the report computes nothing new.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from safetensors import safe_open

from mlx_distill.catalog import load_catalog
from mlx_distill.config import RunConfig
from mlx_distill.events import STAGES
from mlx_distill.files import write_text_atomic
from mlx_distill.pipeline.runfolder import RunFolder
from mlx_distill.platform import device_name, format_bytes


def _percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "not measured"


def _format_parameters(count: float) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M"


def local_parameters(model: str | Path) -> int:
    """Parameters of an unquantized local checkpoint, from its safetensors headers (0 if unknown)."""
    folder = Path(model)
    try:
        if "quantization" in json.loads((folder / "config.json").read_text()):
            return 0  # packed weights: the header shapes are not the parameter counts
        total = 0
        for path in folder.glob("*.safetensors"):
            with safe_open(str(path), "np") as weights:
                for name in weights.keys():
                    total += math.prod(weights.get_slice(name).get_shape())
        return total
    except (OSError, ValueError, KeyError):
        return 0


def _comparison(config: RunConfig, metrics: dict[str, Any]) -> list[str]:
    teacher_entry = load_catalog().find(config.teacher.model)
    teacher_count = (teacher_entry.params_billion * 1e9 if teacher_entry
                     else local_parameters(config.teacher.model))
    teacher_params = _format_parameters(teacher_count) if teacher_count else "see the model card"
    student_params = metrics.get("student_parameters")
    teacher_test = metrics.get("teacher_test", {})
    teacher_stats = metrics.get("teacher", {})
    train = metrics.get("train", {})
    data = metrics.get("data", {})
    student_latency = metrics.get("student_seconds_per_answer")
    teacher_latency = teacher_test.get("seconds_per_answer")
    teacher_accuracy = (_percent(teacher_test.get("accuracy")) if teacher_test
                        else "not measured (teacher.evaluate_test = true measures it)")
    lines = [
        f"# Run `{config.name}`",
        "",
        f"Task **{config.task.name}** ({data.get('train', '?')} train / {data.get('validation', '?')} validation / "
        f"{data.get('test', '?')} test questions), method **{metrics.get('selection', {}).get('label', config.train.method)}**, "
        f"rationales from **{config.train.rationale_source}**. Machine: {device_name()}.",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| model | `{config.teacher.model if config.teacher.enabled else '-'}` | `{config.train.student}` |",
        f"| parameters | {teacher_params} | {_format_parameters(student_params) if student_params else '?'} |",
        f"| test accuracy | {teacher_accuracy} | {_percent(metrics.get('student_test_accuracy'))} |",
        f"| seconds per answer | {f'{teacher_latency:.2f}' if teacher_latency else 'not measured'} "
        f"| {f'{student_latency:.3f}' if student_latency else 'not measured'} |",
        f"| peak memory | {format_bytes(teacher_stats['peak_memory_bytes']) if teacher_stats.get('peak_memory_bytes') else '-'} "
        f"| {format_bytes(train['train_peak_memory']) if train.get('train_peak_memory') else '?'} |",
    ]
    if teacher_count and student_params:
        times = teacher_count / student_params
        lines += ["", f"The student is {times:,.0f}× smaller than its teacher." if times >= 1
                  else f"The student is {1 / times:,.1f}× larger than its teacher (tiny demo models)."]
    return lines


def _teacher_section(config: RunConfig, stats: dict[str, Any]) -> list[str]:
    done = stats.get("done") or 0
    accepted = stats.get("accepted") or 0
    rate = f" ({accepted / done * 100:.0f}%)" if done else ""
    return [
        "",
        "## Teacher rationales",
        "",
        f"{accepted} of {done} training questions kept{rate} under the `{config.teacher.filter}` filter; "
        f"{stats.get('parse_failures', 0)} answers did not parse. Generation: "
        f"{stats.get('generation_tps', 0):.1f} tokens/s, prompts {stats.get('prompt_tps', 0):.0f} "
        f"tokens/s, {stats.get('seconds', 0):.0f} s in all."
        + (f" {stats['restating']} of the kept rationales only restate the answer." if "restating" in stats else ""),
    ]


def _rationale_rows(entry: dict[str, Any]) -> str:
    if entry.get("method") not in ("step-by-step", "cot"):
        return "-"
    text = f"{entry.get('rationale_rows', '?')} of {entry.get('examples', '?')}"
    return text + (f" ({entry['restating_dropped']} restating left out)" if entry.get("restating_dropped") else "")


def _payoff_section(metrics: dict[str, Any]) -> list[str]:
    """Every candidate side by side, which one was exported and why, and what the teacher bought."""
    lines = ["", "## Did the teacher's rationales help?", ""]
    comparison = metrics.get("payoff")
    if comparison:
        lines += [f"**{comparison['verdict']}** {comparison['step_by_step_label']} scored "
                  f"{_percent(comparison['step_by_step_accuracy'])} and finetune "
                  f"{_percent(comparison['finetune_accuracy'])} on the same {comparison['questions']} test "
                  "questions (same student, rows, steps and seed; paired bootstrap over the questions).", ""]
    lines += ["| candidate | rationale rows trained on | best validation | test accuracy | |", "|---|---|---|---|---|"]
    for entry in metrics["candidates"]:
        lines.append(f"| {entry.get('label', entry.get('name'))} | {_rationale_rows(entry)} "
                     f"| {_percent(entry.get('best_validation_accuracy'))} | {_percent(entry.get('test_accuracy'))} "
                     f"| {'**exported**' if entry.get('chosen') else ''} |")
    selection = metrics.get("selection", {})
    if selection:
        how = ("chosen on the validation split" if selection.get("by") == "validation"
               else "the configured method (train.select = \"none\")")
        lines += ["", f"Exported: **{selection.get('label')}**, {how}: {selection.get('reason')}. The test split "
                      "was scored once per candidate for this table and played no part in the choice."]
    return lines


def _baselines_section(config: RunConfig, metrics: dict[str, Any]) -> list[str]:
    """Runs made before candidates were recorded: the configured method against its baselines."""
    train = metrics.get("train", {})
    lines = ["", "## Baselines (same student, same data)", "", "| method | test accuracy | best validation |",
             "|---|---|---|",
             f"| {config.train.method} (this run) | {_percent(metrics.get('student_test_accuracy'))} "
             f"| {_percent(train.get('best_validation_accuracy'))} |"]
    for method, values in metrics["baselines"].items():
        lines.append(f"| {method} | {_percent(values.get('test_accuracy'))} "
                     f"| {_percent(values.get('best_validation_accuracy'))} |")
    return lines


def write_report(config: RunConfig, folder: RunFolder) -> Path:
    """Write the run's report.md from its metrics.json and state.json; return its path."""
    metrics = folder.read_metrics()
    lines = _comparison(config, metrics)
    if metrics.get("candidates"):
        lines += _payoff_section(metrics)
    if metrics.get("teacher"):
        lines += _teacher_section(config, metrics["teacher"])
    train = metrics.get("train", {})
    if train:
        configured = config.train.method + (f" at α {config.train.trainer.alpha:g}"
                                            if config.train.method == "step-by-step" else "")
        lines += ["", f"## Training: {configured}" + (" (the configured candidate)" if metrics.get("candidates") else ""), "",
                  f"Best validation accuracy: {_percent(train.get('best_validation_accuracy'))}; "
                  f"steps: {train.get('steps', '?')}"
                  + (f"; {train['rationale_rows']} of {train.get('examples', '?')} training questions had a rationale "
                     "in the explain: task" if train.get("rationale_rows") is not None
                     and config.train.method in ("step-by-step", "cot") else "")
                  + (f" ({train['restating_dropped']} that only restate the answer left out)"
                     if train.get("restating_dropped") else "") + "."]
    if metrics.get("baselines") and not metrics.get("candidates"):
        lines += _baselines_section(config, metrics)
    state = folder.read_state()["stages"]
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    for stage in STAGES:
        entry = state.get(stage, {})
        lines.append(f"| {stage} | {entry.get('status', '-')} | {entry.get('seconds', 0):.1f} |")
    lines += ["", "The student answers with the `predict:` task alone; `explain:` gives its rationale on request.", ""]
    write_text_atomic(folder.report_path, "\n".join(lines))
    return folder.report_path
