"""Export a run's best student to a folder, optionally quantized, with its model card.

The float export is the run's student as it is (transformers loads it). A quantized export is
measured against the float student on the run's test split, in the same process: weight size,
seconds per answer and test accuracy of both, and how often the two give the same answer. The
figures go into the run's metrics.json under ``exports``, so the model card reads them from there
like every other number it shows.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlx_distill.config import load_config
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event
from mlx_distill.files import check_publish_target, publish_dir, read_jsonl_records
from mlx_distill.methods import predict_prompt
from mlx_distill.pipeline import RunFolder, exported_student, is_run_dir
from mlx_distill.share.card import write_model_card
from mlx_distill.share.runmetrics import read_checked_metrics
from mlx_distill.student import generate, load_student, quantize_student, save_student
from mlx_distill.train import evaluate

# Questions timed one at a time for the seconds-per-answer figure (as the evaluate stage does).
LATENCY_QUESTIONS = 16
# A quantized student that loses more test accuracy than this (in points) is exported with a warning.
WARN_ACCURACY_DROP = 0.02
EXPORT_DIR = "export"
# The marker an export folder carries: `--out` replaces only a folder marked so (or a new path).
EXPORT_KIND = "mlx-distill export"


@dataclass(frozen=True)
class StudentFigures:
    """What was measured of one student on the run's test split."""

    weight_bytes: int
    seconds_per_answer: float | None
    test_accuracy: float | None
    correct: int = 0
    total: int = 0


@dataclass(frozen=True)
class ExportResult:
    """An exported student folder and, for a quantized one, its figures against the float student."""

    folder: Path
    name: str
    quantization: dict[str, Any] | None
    float_figures: StudentFigures
    figures: StudentFigures
    agreement: float | None = None  # share of test questions answered the same as the float student

    @property
    def accuracy_drop(self) -> float | None:
        if self.quantization is None or self.figures.test_accuracy is None or self.float_figures.test_accuracy is None:
            return None
        return self.float_figures.test_accuracy - self.figures.test_accuracy

    @property
    def size_ratio(self) -> float:
        return self.figures.weight_bytes / self.float_figures.weight_bytes if self.float_figures.weight_bytes else 1.0


def export_name(bits: int | None, group_size: int | None) -> str:
    """The folder name of an export: ``student``, or ``student-8bit-g64`` for a quantized one."""
    return "student" if bits is None else f"student-{bits}bit-g{group_size}"


def weight_bytes(folder: Path) -> int:
    """Bytes of a student folder's weight files."""
    return sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))


def run_student(run_dir: Path) -> Path:
    """The run's best student folder; DistillError when the run has none yet."""
    if not is_run_dir(run_dir):
        raise DistillError(f"{run_dir} is not a run folder (no config.toml, state.json or events.jsonl); "
                           "pass runs/NAME")
    student = exported_student(run_dir)
    if student is None:
        raise DistillError(f"no trained student in {run_dir}; finish the run first (mlx-distill run CONFIG)")
    return student


def _time_answers(model, tokenizer, questions: list[str], max_tokens: int) -> float | None:
    latencies = []
    for question in questions[:LATENCY_QUESTIONS]:
        start = time.perf_counter()
        generate(model, tokenizer, [predict_prompt(question)], max_tokens=max_tokens)
        latencies.append(time.perf_counter() - start)
    return statistics.median(latencies) if latencies else None


def _stored_dtype(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("torch_dtype", "float32"))
    except (OSError, ValueError, AttributeError):
        return "float32"


def _measure(folder: Path, config, examples: list, predictions: Path, on_event: OnEvent) -> StudentFigures:
    model, tokenizer = load_student(folder)
    method = config.train.method
    max_tokens = config.train.for_method(method).answer_max_tokens
    summary = evaluate(model, tokenizer, config.task.name, examples, batch_size=config.train.trainer.eval_batch_size,
                       max_tokens=max_tokens, predictions_path=predictions, method=method, split="test",
                       on_event=on_event)
    seconds = _time_answers(model, tokenizer, [e.input for e in examples], max_tokens)
    return StudentFigures(weight_bytes(folder), seconds, summary.accuracy, summary.correct, summary.total)


def _agreement(first: Path, second: Path) -> float | None:
    answers = {r["id"]: r["prediction"] for r in read_jsonl_records(first)}
    others = {r["id"]: r["prediction"] for r in read_jsonl_records(second)}
    shared = [key for key in answers if key in others]
    return sum(answers[k] == others[k] for k in shared) / len(shared) if shared else None


def _copy_side_files(source: Path, folder: Path) -> None:
    """Files of the float student that ``save_student`` does not write (spiece.model, mlx_distill.json)."""
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and not (folder / path.name).exists():
            shutil.copy2(path, folder / path.name)


def export_student(run_dir: str | Path, out: str | Path | None = None, *, bits: int | None = None,
                   group_size: int | None = None, on_event: OnEvent = ignore_event) -> ExportResult:
    """Export the run's best student, optionally quantized, with a model card (README.md).

    Args:
        run_dir: The run folder.
        out: The folder to write. Default: ``RUN/export/student`` or ``RUN/export/student-8bit-g64``.
        bits: Quantize to this many bits (4 or 8); None keeps the float student.
        group_size: Weights per quantization group (32 or 64). Default: the largest that divides
            every quantized layer's width.
        on_event: Receives ``Log`` and the test evaluations' events.

    Returns:
        The folder and what was measured; a quantized export that loses more than 2 points of
        test accuracy is still written (a ``Log`` warning says so).

    Raises:
        DistillError: not a run, no student yet, the run being written by a pipeline, bad options.
    """
    run = RunFolder(Path(run_dir))
    source = run_student(run.path)
    read_checked_metrics(run.path)  # the card reads it: a broken figure is said before any work
    if group_size is not None and bits is None:
        raise DistillError("--group-size is for a quantized export; add --quantize 4 or --quantize 8")
    if out is not None:  # before minutes of measuring: a user's folder is never replaced
        out = _export_target(run.path, out)
        if out == source.resolve() or source.resolve() in out.parents:
            raise DistillError(f"--out {out} is inside the run's student folder {source}; give a folder outside it")
    config = load_config(run.config_path)
    with run.lock():
        if bits is None:
            name, quantization = export_name(None, None), None
            final = _export_target(run.path, out, name)
            metrics = read_checked_metrics(run.path)
            float_figures = StudentFigures(weight_bytes(source), metrics.get("student_seconds_per_answer"),
                                           metrics.get("student_test_accuracy"))
            entry = {"weight_bytes": float_figures.weight_bytes, "dtype": _stored_dtype(source), "measured": time.time()}
            run.update_metrics(exports={**metrics.get("exports", {}), name: entry})
            folder = _publish(source, final, run.path, name)
            return ExportResult(folder, name, None, float_figures, float_figures)
        model, tokenizer = load_student(source)
        quantization = quantize_student(model, bits, group_size)
        name = export_name(bits, quantization["group_size"])
        final = _export_target(run.path, out, name)
        task = config.task
        data = load_task(task.name, task.data, seed=task.seed, validation_fraction=task.validation_fraction,
                         subsample=task.subsample, columns=task.columns or None,
                         human_rationales=task.human_rationales or None)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.measure-", dir=final.parent))
        try:
            save_student(model, tokenizer, scratch / "student")
            del model
            _copy_side_files(source, scratch / "student")
            on_event(Log(message=f"measuring the float student on {len(data.test)} test questions"))
            float_figures = _measure(source, config, data.test, scratch / "float.jsonl", on_event)
            on_event(Log(message=f"measuring the {bits}-bit student on {len(data.test)} test questions"))
            figures = _measure(scratch / "student", config, data.test, scratch / "quantized.jsonl", on_event)
            agreement = _agreement(scratch / "float.jsonl", scratch / "quantized.jsonl")
            result = ExportResult(final, name, quantization, float_figures, figures, agreement)
            run.update_metrics(exports={**read_checked_metrics(run.path).get("exports", {}),
                                        name: _metrics_entry(result)})
            folder = _publish(scratch / "student", final, run.path, name, move=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        drop = result.accuracy_drop
        if drop is not None and drop > WARN_ACCURACY_DROP:
            on_event(Log(message=f"the {bits}-bit student answers {drop * 100:.1f} points fewer test questions "
                                 f"right than the float one; try --quantize 8 or --group-size 32", level="warning"))
        return ExportResult(folder, name, quantization, float_figures, figures, agreement)


def _metrics_entry(result: ExportResult) -> dict[str, Any]:
    return {
        **(result.quantization or {}),
        "weight_bytes": result.figures.weight_bytes,
        "float_weight_bytes": result.float_figures.weight_bytes,
        "seconds_per_answer": result.figures.seconds_per_answer,
        "float_seconds_per_answer": result.float_figures.seconds_per_answer,
        "test_accuracy": result.figures.test_accuracy,
        "float_test_accuracy": result.float_figures.test_accuracy,
        "test_total": result.figures.total,
        "agreement": result.agreement,
        "measured": time.time(),
    }


def _export_target(run_dir: Path, out: str | Path | None, name: str | None = None) -> Path:
    """Where the export goes (``--out``, or else ``RUN/export/NAME``); DistillError (one line) when
    it is taken by anything but an earlier export."""
    default = out is None
    return check_publish_target(run_dir / EXPORT_DIR / name if default else out, EXPORT_KIND,
                                "the export folder" if default else "--out", _earlier_export_in(run_dir))


def _publish(source: Path, final: Path, run_dir: Path, name: str, move: bool = False) -> Path:
    """Copy (or move) a student folder to ``final`` with its model card, atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        shutil.rmtree(temp)
        if move:
            shutil.move(str(source), temp)
        else:
            shutil.copytree(source, temp)
        write_model_card(run_dir, temp, model_ref=str(final.resolve()), export=name)
        publish_dir(temp, final, kind=EXPORT_KIND, what="the export folder", accept=_earlier_export_in(run_dir))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _earlier_export_in(run_dir: Path):
    """An unmarked folder in the run's own export folder that holds a student: an export written
    before exports were marked, which may be replaced (a folder anywhere else may not)."""
    exports = (Path(run_dir) / EXPORT_DIR).resolve()

    def earlier(folder: Path) -> bool:
        return folder.resolve().parent == exports and (folder / "config.json").is_file()

    return earlier


def figures_dict(result: ExportResult) -> dict[str, Any]:
    """The result as plain data (for printing as JSON)."""
    return {"folder": str(result.folder), "quantization": result.quantization, "agreement": result.agreement,
            "float": asdict(result.float_figures), "exported": asdict(result.figures)}


__all__ = ["EXPORT_DIR", "EXPORT_KIND", "ExportResult", "StudentFigures", "export_name", "export_student",
           "figures_dict", "run_student", "weight_bytes"]
