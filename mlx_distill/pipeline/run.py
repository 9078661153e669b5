"""The whole job, stage by stage, in one run folder: data → teacher → release → train → evaluate → export.

Wiring only: each stage calls the public function of its module and records what it made.
A finished stage is skipped on rerun; a stage whose inputs changed is refused with a message
naming what changed, instead of silently mixing results (``redo`` discards it on purpose).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlx_distill import distributed
from mlx_distill.config import RunConfig, TrainConfig
from mlx_distill.pipeline.ranks import agree_on_stage, any_stop, runs_here, share_rationales
from mlx_distill.errors import DistillError
from mlx_distill.methods import predict_prompt
from mlx_distill.events import (
    STAGES,
    Failed,
    Finished,
    Log,
    MemoryReport,
    OnEvent,
    ShouldStop,
    StageFinished,
    StageStarted,
    fan_out,
    ignore_event,
    never_stop,
)
from mlx_distill.pipeline.runfolder import EventLog, RunFolder, write_atomic


# Marks an exception whose Failed event a stage already sent.
_REPORTED = "mlx-distill: reported as a stage failure"


class Stopped(Exception):
    """The user asked to stop; the stage kept what it finished."""


def run_folder_for(config: RunConfig, run_dir: str | Path | None = None) -> RunFolder:
    return RunFolder(Path(run_dir) if run_dir else Path(config.runs_dir) / config.name)


# -- fingerprints: what each stage's output depends on -------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_signature(path: str) -> list:
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return [(str(p.relative_to(root) if root.is_dir() else p.name), p.stat().st_size) for p in files]


def stage_inputs(config: RunConfig) -> dict[str, dict[str, Any]]:
    """The config values (and data file sizes) each stage's result depends on, by stage."""
    task = dataclasses.asdict(config.task)
    data = {"task": task, "files": _files_signature(config.task.data)}
    teacher = {k: v for k, v in dataclasses.asdict(config.teacher).items() if k != "evaluate_test"}
    defaults = TrainConfig().to_dict()
    # Trainer keys left at their defaults are left out, so adding a setting to TrainConfig does not
    # make every earlier run look changed.
    train = {k: v for k, v in config.to_dict()["train"].items() if k not in defaults or v != defaults[k]}
    uses_teacher = config.teacher.enabled and config.train.uses_teacher
    inputs = {
        "data": data,
        "teacher": {"data": data, "teacher": teacher},
        "train": {"data": data, "train": train, "teacher": teacher if uses_teacher else None},
    }
    inputs["evaluate"] = {"train": inputs["train"], "teacher_test": config.teacher.evaluate_test}
    inputs["export"] = {"train": inputs["train"]}
    return inputs


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} → {b!r}")
    return changed


def _check_unchanged(folder: RunFolder, config: RunConfig, redo: str | None) -> None:
    """Refuse to continue a run whose started stages were made with other settings."""
    if not folder.config_path.exists():
        return
    try:
        old = tomllib.loads(folder.config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return
    old_version = int(old.get("format_version", 1))
    if old_version > config.format_version:
        raise DistillError(
            f"run folder {folder.path} was written by a newer mlx-distill (format {old_version}); upgrade mlx-distill"
        )
    new = config.to_dict()
    state = folder.read_state()["stages"]
    new_inputs = stage_inputs(config)
    for stage in STAGES:
        entry = state.get(stage)
        if not entry or entry.get("fingerprint") in (None, _digest(new_inputs[stage])):
            continue
        if redo is not None and STAGES.index(stage) >= STAGES.index(redo):
            continue
        changes = _changed_keys({k: old.get(k) for k in ("task", "teacher", "train")},
                                {k: new.get(k) for k in ("task", "teacher", "train")})
        what = "; ".join(changes[:3]) or "the data files changed"
        raise DistillError(
            f"run '{folder.path.name}' has a {stage} stage made with other settings ({what}); "
            f"use a new run name, or rerun with --redo {stage} to discard it and what follows"
        )


def _discard_from(folder: RunFolder, stage: str) -> None:
    """Forget ``stage`` and every later stage, deleting their outputs (``--redo``)."""
    outputs = {
        "teacher": [folder.rationales_path, folder.teacher_test_path],
        "train": [folder.train_dir],
        "evaluate": [],
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


# -- the pipeline ----------------------------------------------------------------------------------
def run_pipeline(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    redo: str | None = None,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> dict[str, Any]:
    """Run every stage that the run folder does not hold yet; return the run's metrics.

    Args:
        config: the run config (``mlx_distill.config.load_config``).
        run_dir: the run folder. Default: ``<runs_dir>/<name>``.
        redo: a stage name: discard it and every later stage first.
        on_event: receives every progress event (also appended to events.jsonl).
        should_stop: polled between batches and steps; True stops after saving finished work.

    Raises:
        DistillError: a bad input, a changed config, an unwritable folder or a full disk.
    """
    if redo is not None and redo not in STAGES:
        raise DistillError(f"--redo takes a stage name: {', '.join(STAGES)}; got '{redo}'")
    task_data = _load_data(config)  # a data file that does not parse fails before any folder is made
    _preflight_memory(config)
    if not distributed.is_main():  # launched on several ranks: rank 0 owns the run folder
        return _run_as_worker(config, run_dir, task_data, on_event, should_stop)
    folder = run_folder_for(config, run_dir)
    created = not folder.path.exists()
    folder.create()
    try:
        folder.read_state()
        _check_unchanged(folder, config, redo)
    except DistillError:
        if created:
            shutil.rmtree(folder.path, ignore_errors=True)
        raise
    folder.lock()
    log = EventLog(folder.events_path)
    emit = fan_out(log, on_event)
    try:
        if redo is not None:
            _discard_from(folder, redo)
        write_atomic(folder.config_path, config.to_toml())
        return _run_stages(config, folder, task_data, emit, should_stop)
    except Stopped:
        hint = f"rerun `mlx-distill run {folder.config_path}` to resume"
        emit(Finished(stage="run", stopped=True, resume_hint=hint))
        return {**folder.read_metrics(), "stopped": True}
    except OSError as error:
        if error.errno == errno.ENOSPC:
            message = f"disk full while writing in {folder.path}; free some space and rerun the same command to resume"
            emit(Failed(stage="run", error=message))
            raise DistillError(message) from None
        emit(Failed(stage="run", error=str(error)))
        raise
    except BaseException as error:  # noqa: BLE001 - recorded for the UI, then re-raised
        if _REPORTED not in getattr(error, "__notes__", []):
            text = str(error) if isinstance(error, DistillError) else f"{type(error).__name__}: {error}"
            emit(Failed(stage="run", error=text))
        raise
    finally:
        log.close()
        folder.unlock()


def _run_as_worker(config, run_dir, task_data, on_event: OnEvent, should_stop: ShouldStop) -> dict[str, Any]:
    """A rank > 0: the teacher and train stages with rank 0, writing nothing of the run folder."""
    from mlx_distill.pipeline.ranks import worker_events, worker_folder

    try:
        return _run_stages(config, worker_folder(run_folder_for(config, run_dir).path), task_data,
                           worker_events(on_event), should_stop)
    except Stopped:
        return {"stopped": True}


def _run_stages(config, folder: RunFolder, task_data, emit: OnEvent, should_stop: ShouldStop) -> dict[str, Any]:
    inputs = stage_inputs(config)
    stage_functions: dict[str, Callable[[], str]] = {
        "data": lambda: _stage_data(folder, task_data),
        "teacher": lambda: _stage_teacher(config, folder, task_data, emit, should_stop),
        "train": lambda: _stage_train(config, folder, task_data, emit, should_stop),
        "evaluate": lambda: _stage_evaluate(config, folder, task_data, emit),
        "export": lambda: _stage_export(config, folder, emit),
    }
    for stage in STAGES:
        fingerprint = _digest(inputs[stage])
        entry = folder.stage(stage)
        skip = entry.get("status") == "done" and entry.get("fingerprint") == fingerprint
        skip, stop = agree_on_stage(skip, not skip and should_stop())  # rank 0 decides for all ranks
        if skip:
            emit(StageFinished(stage=stage, skipped=True, detail=entry.get("detail", "")))
            continue
        if stop:
            raise Stopped()
        if not runs_here(stage):
            continue
        emit(StageStarted(stage=stage))
        folder.set_stage(stage, status="running", fingerprint=fingerprint)
        start = time.time()
        try:
            detail = stage_functions[stage]()
        except Stopped:
            folder.set_stage(stage, status="stopped")
            raise
        except BaseException as error:
            folder.set_stage(stage, status="failed", error=str(error))
            emit(Failed(stage=stage, error=str(error)))
            error.add_note(_REPORTED)
            raise
        seconds = time.time() - start
        folder.set_stage(stage, status="done", seconds=seconds, detail=detail)
        emit(StageFinished(stage=stage, seconds=seconds, detail=detail))
    if not distributed.is_main():
        return {}
    write_report(config, folder)
    metrics = folder.read_metrics()
    emit(Finished(stage="run", summary={k: metrics[k] for k in ("student_test_accuracy",) if k in metrics}))
    return metrics


def _load_data(config: RunConfig):
    from mlx_distill.data import load_task

    return load_task(
        config.task.name,
        config.task.data,
        seed=config.task.seed,
        validation_fraction=config.task.validation_fraction,
        subsample=config.task.subsample,
        columns=config.task.columns or None,
        human_rationales=config.task.human_rationales or None,
    )


def _preflight_memory(config: RunConfig) -> None:
    """Refuse at once a catalog model that cannot fit this machine (before any folder is made)."""
    from mlx_distill.catalog import fits_in_memory, load_catalog, usable_memory_bytes
    from mlx_distill.platform import format_bytes, is_apple_gpu

    catalog = load_catalog()
    checks = [(config.train.student, "student")]
    if config.teacher.enabled:
        checks.append((config.teacher.model, "teacher"))
    for name, role in checks:
        model = catalog.find(name)
        if model is None or fits_in_memory(model):
            continue
        smaller = [m.name for m in (catalog.teachers if role == "teacher" else catalog.students) if fits_in_memory(m)]
        suggestion = f"; try {smaller[-1]}" if smaller else ""
        need = format_bytes(model.runtime_memory_bytes(is_apple_gpu()))
        raise DistillError(
            f"{role} {model.name} needs about {need} but this machine has about "
            f"{format_bytes(usable_memory_bytes())} for models{suggestion}"
        )


def _stage_data(folder: RunFolder, task_data) -> str:
    counts = {split: len(getattr(task_data, split)) for split in ("train", "validation", "test")}
    with_rationale = sum(1 for e in task_data.train if e.rationale)
    folder.update_metrics(data=counts, human_rationales=with_rationale)
    notes = list(getattr(task_data, "notes", []) or [])
    write_atomic(folder.path / "data.json", json.dumps({"counts": counts, "notes": notes}, indent=2))
    return f"{counts['train']} train / {counts['validation']} validation / {counts['test']} test"


def _teacher_kwargs(config: RunConfig) -> dict[str, Any]:
    teacher = config.teacher
    return dict(
        batch_size=teacher.batch_size,
        max_tokens=teacher.max_tokens,
        prompt_file=teacher.prompt_file or None,
        rationalize=teacher.rationalize,
        samples=teacher.samples,
        quantize=teacher.quantize or None,
    )


def _stage_teacher(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent, should_stop: ShouldStop) -> str:
    if not config.teacher.enabled:
        return "teacher disabled in the config"
    from mlx_distill.catalog import resolve_model
    # The same as teacher.generate_rationales on one process; on several, each rank writes a shard.
    from mlx_distill.teacher.sharded import generate_rationales_sharded as generate_rationales

    teacher_id = resolve_model(config.teacher.model)
    summary = generate_rationales(
        task_data.train,
        config.task.name,
        teacher_id,
        folder.rationales_path,
        filter=config.teacher.filter,
        limit=config.teacher.limit or None,
        on_event=emit,
        should_stop=should_stop,
        **_teacher_kwargs(config),
    )
    if any_stop(should_stop, summary):
        raise Stopped()
    stats = _summary_dict(summary)
    folder.update_metrics(teacher=stats)
    if config.teacher.evaluate_test and task_data.test:
        emit(Log(message=f"teacher answers the {len(task_data.test)} test questions (teacher.evaluate_test)"))
        test_summary = generate_rationales(
            task_data.test,
            config.task.name,
            teacher_id,
            folder.teacher_test_path,
            filter="all",
            on_event=emit,
            should_stop=should_stop,
            **_teacher_kwargs(config),
        )
        if any_stop(should_stop, test_summary):
            raise Stopped()
        if distributed.is_main():
            folder.update_metrics(teacher_test=_teacher_test_metrics(folder, task_data, test_summary))
    _report_memory("teacher", emit)
    accepted, done = stats.get("accepted"), stats.get("done") or stats.get("total")
    return f"{accepted}/{done} rationales accepted" if accepted is not None and done else "rationales written"


def _summary_dict(summary: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(summary):
        return {k: v for k, v in dataclasses.asdict(summary).items() if isinstance(v, (int, float, str, bool))}
    return dict(summary or {})


def _teacher_test_metrics(folder: RunFolder, task_data, summary: Any) -> dict[str, Any]:
    from mlx_distill.data import load_rationales
    from mlx_distill.metrics import is_correct

    records = load_rationales(folder.teacher_test_path)
    golds = {e.id: e.label for e in task_data.test}
    correct = sum(1 for rid, r in records.items() if rid in golds and is_correct(
        _task_for_metrics(task_data), r.answer or "", golds[rid]))
    seconds = [r.seconds for r in records.values() if getattr(r, "seconds", None)]
    return {
        "accuracy": correct / max(1, len(records)),
        "correct": correct,
        "total": len(records),
        "seconds_per_answer": statistics.mean(seconds) if seconds else None,
        **{f"stage_{k}": v for k, v in _summary_dict(summary).items()},
    }


def _task_for_metrics(task_data) -> str:
    return task_data.task


def _report_memory(stage: str, emit: OnEvent) -> None:
    import mlx.core as mx

    from mlx_distill.platform import total_memory_bytes

    emit(MemoryReport(stage=stage, active=mx.get_active_memory(), peak=mx.get_peak_memory(),
                      total=total_memory_bytes()))


def _load_rationales_for_training(config: RunConfig, folder: RunFolder, task_data):
    if config.train.uses_teacher:
        from mlx_distill.data import load_rationales

        if folder.rationales_path.exists():
            return load_rationales(folder.rationales_path)
    return None


def _stage_train(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent, should_stop: ShouldStop) -> str:
    import mlx.core as mx

    from mlx_distill.catalog import resolve_model
    from mlx_distill.train import train

    mx.reset_peak_memory()
    rationales = share_rationales(_load_rationales_for_training(config, folder, task_data))
    student = resolve_model(config.train.student)
    # The evaluate stage scores the test split once, on the exported student.
    data = dataclasses.replace(_with_rationale_source(task_data, config.train.rationale_source), test=[])
    result = train(
        student,
        data,
        rationales if config.train.rationale_source == "teacher" else None,
        config.train.for_method(),
        folder.train_dir,
        resume=True,
        on_event=emit,
        should_stop=should_stop,
    )
    if any_stop(should_stop, result):
        raise Stopped()
    _report_memory("train", emit)
    values = _summary_dict(result)
    values["train_peak_memory"] = mx.get_peak_memory()
    folder.update_metrics(train=values)
    baselines = {}
    for method in config.train.baselines:
        emit(Log(message=f"training the {method} baseline"))
        baseline = train(
            student,
            _with_rationale_source(task_data, config.train.rationale_source),
            rationales,
            config.train.for_method(method),
            folder.path / "baselines" / method,
            resume=True,
            on_event=emit,
            should_stop=should_stop,
        )
        if any_stop(should_stop, baseline):
            raise Stopped()
        baselines[method] = _summary_dict(baseline)
    if baselines:
        folder.update_metrics(baselines=baselines)
    best = values.get("best_validation_accuracy")
    return f"best validation accuracy {best * 100:.1f}%" if isinstance(best, float) else "trained"


def _with_rationale_source(task_data, source: str):
    """Human rationales are kept only when the config asks for them."""
    if source == "human":
        return task_data
    return dataclasses.replace(
        task_data,
        train=[dataclasses.replace(e, rationale=None) for e in task_data.train],
    )


def _trained_student_dir(folder: RunFolder) -> Path:
    exported = folder.train_dir / "student"
    if not (exported / "config.json").exists():
        raise DistillError(f"no trained student in {exported}; rerun with --redo train")
    return exported


def _stage_evaluate(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent) -> str:
    from mlx_distill.student import generate, load_student
    from mlx_distill.train import evaluate

    model, tokenizer = load_student(_trained_student_dir(folder))
    model.eval()
    summary = evaluate(
        model,
        tokenizer,
        config.task.name,
        task_data.test,
        batch_size=config.train.trainer.eval_batch_size,
        max_tokens=config.train.trainer.answer_max_tokens,
        predictions_path=folder.path / "predictions_test.jsonl",
        method=config.train.method,
        split="test",
        on_event=emit,
    )
    values = _summary_dict(summary)
    accuracy = values.get("accuracy")
    params = sum(v.size for _, v in _flat_parameters(model))
    latencies = []
    for example in task_data.test[:16]:
        start = time.perf_counter()
        generate(model, tokenizer, [predict_prompt(example.input)], max_tokens=config.train.trainer.answer_max_tokens)
        latencies.append(time.perf_counter() - start)
    folder.update_metrics(
        student_test_accuracy=accuracy,
        student_test=values,
        student_parameters=params,
        student_seconds_per_answer=statistics.median(latencies) if latencies else None,
    )
    return f"test accuracy {accuracy * 100:.1f}%" if isinstance(accuracy, float) else "evaluated"


def _flat_parameters(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def _stage_export(config: RunConfig, folder: RunFolder, emit: OnEvent) -> str:
    source = _trained_student_dir(folder)
    temp = folder.path / ".student.tmp"
    if temp.exists():
        shutil.rmtree(temp)
    shutil.copytree(source, temp)
    if folder.student_dir.exists():
        shutil.rmtree(folder.student_dir)
    temp.rename(folder.student_dir)
    return f"student saved to {folder.student_dir}"


# -- the report ---------------------------------------------------------------------------------
def _percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "not measured"


def _format_parameters(count: float) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M"


def _local_parameters(model: str) -> int:
    """Parameters of an unquantized local checkpoint, from its safetensors headers (0 if unknown)."""
    folder = Path(model)
    try:
        if "quantization" in json.loads((folder / "config.json").read_text()):
            return 0
        total = 0
        for path in folder.glob("*.safetensors"):
            with open(path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            for name, info in header.items():
                if name != "__metadata__":
                    total += math.prod(info["shape"])
        return total
    except (OSError, ValueError, KeyError):
        return 0


def write_report(config: RunConfig, folder: RunFolder) -> Path:
    """report.md: how the student compares with its teacher on this run's test questions."""
    from mlx_distill.catalog import load_catalog
    from mlx_distill.platform import device_name, format_bytes

    metrics = folder.read_metrics()
    catalog = load_catalog()
    teacher_entry = catalog.find(config.teacher.model)
    teacher_billions = teacher_entry.params_billion if teacher_entry else _local_parameters(config.teacher.model) / 1e9
    teacher_params = _format_parameters(teacher_billions * 1e9) if teacher_billions else "see the model card"
    student_params = metrics.get("student_parameters")
    teacher_test = metrics.get("teacher_test", {})
    teacher_stats = metrics.get("teacher", {})
    train = metrics.get("train", {})
    data = metrics.get("data", {})
    ratio = ""
    if teacher_billions and student_params:
        times = teacher_billions * 1e9 / student_params
        ratio = (f"The student is {times:,.0f}× smaller than its teacher" if times >= 1
                 else f"The student is {1 / times:,.1f}× larger than its teacher (tiny demo models)")
    student_latency = metrics.get("student_seconds_per_answer")
    teacher_latency = teacher_test.get("seconds_per_answer")
    lines = [
        f"# Run `{config.name}`",
        "",
        f"Task **{config.task.name}** ({data.get('train', '?')} train / {data.get('validation', '?')} validation / "
        f"{data.get('test', '?')} test questions), method **{config.train.method}**, "
        f"rationales from **{config.train.rationale_source}**. Machine: {device_name()}.",
        "",
        "| | teacher | student |",
        "|---|---|---|",
        f"| model | `{config.teacher.model if config.teacher.enabled else '-'}` | `{config.train.student}` |",
        f"| parameters | {teacher_params} | {_format_parameters(student_params) if student_params else '?'} |",
        f"| test accuracy | {_percent(teacher_test.get('accuracy')) if teacher_test else 'not measured (teacher.evaluate_test = true measures it)'} "
        f"| {_percent(metrics.get('student_test_accuracy'))} |",
        f"| seconds per answer | {f'{teacher_latency:.2f}' if teacher_latency else 'not measured'} "
        f"| {f'{student_latency:.3f}' if student_latency else 'not measured'} |",
        f"| peak memory | {format_bytes(teacher_stats['peak_memory_bytes']) if teacher_stats.get('peak_memory_bytes') else '-'} "
        f"| {format_bytes(train['train_peak_memory']) if train.get('train_peak_memory') else '?'} |",
    ]
    if ratio:
        lines += ["", ratio + "."]
    if teacher_stats:
        done = teacher_stats.get("done") or 0
        accepted = teacher_stats.get("accepted") or 0
        rate = f" ({accepted / done * 100:.0f}%)" if done else ""
        lines += [
            "",
            "## Teacher rationales",
            "",
            f"{accepted} of {done} training questions kept{rate} under the `{config.teacher.filter}` filter; "
            f"{teacher_stats.get('parse_failures', 0)} answers did not parse. Generation: "
            f"{teacher_stats.get('generation_tps', 0):.1f} tokens/s, prompts {teacher_stats.get('prompt_tps', 0):.0f} "
            f"tokens/s, {teacher_stats.get('seconds', 0):.0f} s in all.",
        ]
    if train:
        best = train.get("best_validation_accuracy")
        lines += ["", "## Training", "", f"Best validation accuracy: {_percent(best)}; steps: {train.get('steps', '?')}."]
    baselines = metrics.get("baselines", {})
    if baselines:
        lines += ["", "## Baselines (same student, same data)", "", "| method | test accuracy | best validation |",
                  "|---|---|---|"]
        lines.append(f"| {config.train.method} (this run) | {_percent(metrics.get('student_test_accuracy'))} | {_percent(train.get('best_validation_accuracy'))} |")
        for method, values in baselines.items():
            lines.append(f"| {method} | {_percent(values.get('test_accuracy'))} | {_percent(values.get('best_validation_accuracy'))} |")
    state = folder.read_state()["stages"]
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    for stage in STAGES:
        entry = state.get(stage, {})
        lines.append(f"| {stage} | {entry.get('status', '-')} | {entry.get('seconds', 0):.1f} |")
    lines += ["", "The student answers with the `predict:` task alone; `explain:` gives its rationale on request.", ""]
    write_atomic(folder.report_path, "\n".join(lines))
    return folder.report_path
