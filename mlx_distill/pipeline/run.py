"""The whole job, stage by stage, in one run folder: data → teacher → train → evaluate → export.

Wiring only: each stage calls the public function of its stage package and records what it made
(``resume`` decides what a rerun may reuse, ``report`` writes report.md). One process writes a
run folder at a time: ``run_pipeline`` holds the folder's lock for the whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from mlx_distill import distributed
from mlx_distill.catalog import fits_in_memory, load_catalog, resolve_model, usable_memory_bytes
from mlx_distill.config import RunConfig
from mlx_distill.data import PAPER_SOURCES, load_paper_rationales, load_rationales, load_task, paper_folder
from mlx_distill.errors import DistillError
from mlx_distill.events import (
    STAGES,
    CandidateChosen,
    EvalResult,
    Failed,
    Finished,
    Log,
    MemoryReport,
    OnEvent,
    ShouldStop,
    StageFinished,
    StageStarted,
    TrainStep,
    fan_out,
    ignore_event,
    never_stop,
)
from mlx_distill.machine import LaptopRun
from mlx_distill.methods import predict_prompt
from mlx_distill.metrics import is_correct
from mlx_distill.pipeline.ranks import agree_on_stage, any_stop, runs_here, share_rationales, worker_events, worker_folder
from mlx_distill.pipeline.report import write_report
from mlx_distill.pipeline.resume import check_unchanged, discard_from, stage_fingerprints
from mlx_distill.pipeline.runfolder import EventLog, RunFolder
from mlx_distill.platform import format_bytes, is_apple_gpu, total_memory_bytes
from mlx_distill.student import check_student, count_parameters, generate, load_student
from mlx_distill.teacher import cache_root, check_teacher, generate_rationales_sharded
from mlx_distill.train import Candidate, choose, evaluate, payoff, plan_candidates, train
from mlx_distill.files import publish_dir, read_jsonl_records, write_json_atomic

# Marks an exception whose Failed event a stage already sent.
_REPORTED = "mlx-distill: reported as a stage failure"
# Test questions timed one by one for the student's seconds per answer.
LATENCY_QUESTIONS = 16


class Stopped(Exception):
    """The user asked to stop; the stage kept what it finished."""


def run_folder_for(config: RunConfig, run_dir: str | Path | None = None) -> RunFolder:
    """The run's folder: ``run_dir`` when given, else ``<runs_dir>/<name>``."""
    return RunFolder(Path(run_dir) if run_dir else Path(config.runs_dir) / config.name)


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
        DistillError: a bad input, a changed config, a run another process is writing, an
            unwritable folder or a full disk.
    """
    if redo is not None and redo not in STAGES:
        raise DistillError(f"--redo takes a stage name: {', '.join(STAGES)}; got '{redo}'")
    task_data = _load_data(config)  # a data file that does not parse fails before any folder is made
    _preflight_models(config)
    if not distributed.is_main():  # launched on several ranks: rank 0 owns the run folder
        try:
            folder = worker_folder(run_folder_for(config, run_dir).path)
            return _run_stages(config, folder, task_data, worker_events(on_event), should_stop)
        except Stopped:
            return {"stopped": True}
    folder = run_folder_for(config, run_dir)
    created = not folder.path.exists()
    folder.create()
    with folder.lock():
        try:
            check_unchanged(folder, config, redo)
        except DistillError:
            if created:
                shutil.rmtree(folder.path, ignore_errors=True)
            raise
        log = EventLog(folder.events_path)
        # Awake while a stage works, paused on a low battery, MLX's memory limit, a word at the end.
        laptop = LaptopRun.for_run(config.run, folder.path, config.name)
        emit = fan_out(log, on_event, laptop.on_event)
        try:
            with laptop.running(emit):
                return _run_logged(config, folder, task_data, redo, emit, laptop.wrap(should_stop, emit))
        finally:
            log.close()


def _run_logged(config: RunConfig, folder: RunFolder, task_data, redo: str | None, emit: OnEvent,
                should_stop: ShouldStop) -> dict[str, Any]:
    try:
        if redo is not None:
            discard_from(folder, redo, config.train.baselines)
        folder.write_config(config.to_toml())
        return _run_stages(config, folder, task_data, emit, should_stop)
    except (Stopped, KeyboardInterrupt) as stop:
        hint = f"rerun `mlx-distill run {folder.config_path}` to resume"
        emit(Finished(stage="run", stopped=True, resume_hint=hint))
        if isinstance(stop, KeyboardInterrupt):  # a second Ctrl-C: stop at once
            raise
        return {**folder.read_metrics(), "stopped": True}
    except OSError as error:
        if error.errno == errno.ENOSPC:
            message = f"disk full while writing in {folder.path}; free some space and rerun the same command to resume"
            emit(Failed(stage="run", error=message))
            raise DistillError(message) from None
        emit(Failed(stage="run", error=str(error)))
        raise
    except Exception as error:
        if _REPORTED not in getattr(error, "__notes__", []):
            text = str(error) if isinstance(error, DistillError) else f"{type(error).__name__}: {error}"
            emit(Failed(stage="run", error=text))
        raise


def _run_stages(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent,
                should_stop: ShouldStop) -> dict[str, Any]:
    fingerprints = stage_fingerprints(config)
    stage_functions: dict[str, Callable[[], str]] = {
        "data": lambda: _stage_data(folder, task_data),
        "teacher": lambda: _stage_teacher(config, folder, task_data, emit, should_stop),
        "train": lambda: _stage_train(config, folder, task_data, emit, should_stop),
        "evaluate": lambda: _stage_evaluate(config, folder, task_data, emit),
        "export": lambda: _stage_export(folder, config),
    }
    for stage in STAGES:
        entry = folder.stage(stage)
        skip = entry.get("status") == "done" and entry.get("fingerprint") == fingerprints[stage]
        skip, stop = agree_on_stage(skip, not skip and should_stop())  # rank 0 decides for all ranks
        if skip:
            emit(StageFinished(stage=stage, skipped=True, detail=entry.get("detail", "")))
            continue
        if stop:
            raise Stopped()
        if not runs_here(stage):
            continue
        emit(StageStarted(stage=stage))
        folder.set_stage(stage, status="running", fingerprint=fingerprints[stage])
        start = time.time()
        try:
            detail = stage_functions[stage]()
        except (Stopped, KeyboardInterrupt):
            _record_end(folder, stage, status="stopped")
            raise
        except Exception as error:
            _record_end(folder, stage, status="failed", error=str(error))
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
    # The run's answer for the UI's final panel: what was exported, every candidate, the payoff.
    emit(Finished(stage="run", summary={k: metrics[k] for k in ("student_test_accuracy", "selection", "candidates",
                                                                 "payoff") if k in metrics}))
    return metrics


def _record_end(folder: RunFolder, stage: str, **fields: Any) -> None:
    """Record how a stage ended, if the disk lets us: the error being raised matters more, and a
    reader never takes a stage as running without the run's lock held (``run_status``)."""
    with contextlib.suppress(OSError):
        folder.set_stage(stage, **fields)


def _load_data(config: RunConfig):
    task = config.task
    return load_task(task.name, task.data, seed=task.seed, validation_fraction=task.validation_fraction,
                     subsample=task.subsample, columns=task.columns or None,
                     human_rationales=task.human_rationales or None)


def _preflight_models(config: RunConfig) -> None:
    """Open (not load) both models and refuse at once one that is broken, of the wrong kind or too
    large for this machine: before any folder is made, not hours later when its stage starts."""
    check_student(resolve_model(config.train.student))
    if config.teacher.enabled:
        check_teacher(resolve_model(config.teacher.model))
    catalog = load_catalog()
    checks = [(config.train.student, "student")] + ([(config.teacher.model, "teacher")] if config.teacher.enabled else [])
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


def _summary_dict(summary: Any) -> dict[str, Any]:
    """The plain numbers and strings of a stage's result dataclass (for metrics.json)."""
    return {k: v for k, v in dataclasses.asdict(summary).items() if isinstance(v, (int, float, str, bool))}


def _report_memory(stage: str, emit: OnEvent) -> None:
    emit(MemoryReport(stage=stage, active=mx.get_active_memory(), peak=mx.get_peak_memory(),
                      total=total_memory_bytes()))


def _stage_data(folder: RunFolder, task_data) -> str:
    counts = {split: len(getattr(task_data, split)) for split in ("train", "validation", "test")}
    folder.update_metrics(data=counts, human_rationales=sum(1 for e in task_data.train if e.rationale))
    write_json_atomic(folder.path / "data.json", {"counts": counts, "notes": list(task_data.notes)})
    return f"{counts['train']} train / {counts['validation']} validation / {counts['test']} test"


def _stage_teacher(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent, should_stop: ShouldStop) -> str:
    teacher = config.teacher
    if config.teacher_unneeded:
        return (f"skipped: training reads no teacher output (train.method = {config.train.method}, "
                f"rationale_source = {config.train.rationale_source}) and the config has no [teacher]")
    if not teacher.enabled:
        return "teacher disabled in the config"
    # The same as teacher.generate_rationales on one process; on several, each rank writes a shard.
    # exemplar_pool: the worked exemplars of a task without a built-in prompt come from the training
    # rows, whatever split is asked and however the rows are sharded over ranks.
    options = dict(batch_size=teacher.batch_size, max_tokens=teacher.max_tokens, prompt_file=teacher.prompt_file or None,
                   rationalize=teacher.rationalize, samples=teacher.samples, quantize=teacher.quantize or None,
                   reject_restating=teacher.reject_restating, exemplar_pool=task_data.train,
                   prefill_step_size=config.run.prefill_step_size or None, on_event=emit, should_stop=should_stop)
    teacher_id = resolve_model(teacher.model)
    summary = generate_rationales_sharded(task_data.train, config.task.name, teacher_id, folder.rationales_path,
                                          filter=teacher.filter, limit=teacher.limit or None, **options)
    if any_stop(should_stop, summary):
        raise Stopped()
    folder.update_metrics(teacher=_summary_dict(summary))
    if teacher.evaluate_test and task_data.test:
        emit(Log(message=f"teacher answers the {len(task_data.test)} test questions (teacher.evaluate_test)"))
        test_summary = generate_rationales_sharded(task_data.test, config.task.name, teacher_id,
                                                   folder.teacher_test_path, filter="all", **options)
        if any_stop(should_stop, test_summary):
            raise Stopped()
        if distributed.is_main():
            folder.update_metrics(teacher_test=_teacher_test_metrics(folder, task_data, test_summary))
    _report_memory("teacher", emit)
    return f"{summary.accepted}/{summary.done} rationales accepted"


def _teacher_test_metrics(folder: RunFolder, task_data, summary: Any) -> dict[str, Any]:
    records = load_rationales(folder.teacher_test_path)
    golds = {e.id: e.label for e in task_data.test}
    correct = sum(1 for rid, r in records.items() if rid in golds and is_correct(task_data.task, r.answer or "", golds[rid]))
    seconds = [r.seconds for r in records.values() if r.seconds]
    return {
        "accuracy": correct / max(1, len(records)),
        "correct": correct,
        "total": len(records),
        "seconds_per_answer": statistics.mean(seconds) if seconds else None,
        **{f"stage_{k}": v for k, v in _summary_dict(summary).items()},
    }


def _with_rationale_source(task_data, source: str):
    """Human rationales are kept only when the config asks for them; the test split is the evaluate stage's."""
    train_examples = task_data.train if source == "human" else [
        dataclasses.replace(e, rationale=None) for e in task_data.train]
    return dataclasses.replace(task_data, train=train_examples, test=[])


def _candidates(config: RunConfig) -> list[Candidate]:
    train = config.train
    return plan_candidates(train.method, train.trainer.alpha, train.candidate_alphas, train.baselines)


def _candidate_dir(folder: RunFolder, candidate: Candidate) -> Path:
    if candidate.configured:
        return folder.train_dir
    if candidate.baseline:
        return folder.baseline_dir(candidate.method)
    return folder.candidates_dir / candidate.name


def _tagged(emit: OnEvent, candidate: Candidate) -> OnEvent:
    """Mark the training and scoring events of one candidate, so the UI keeps candidates apart."""

    def on_event(event) -> None:
        emit(dataclasses.replace(event, candidate=candidate.name) if isinstance(event, (TrainStep, EvalResult))
             else event)

    return on_event


def _stage_train(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent, should_stop: ShouldStop) -> str:
    mx.reset_peak_memory()
    rationales = None
    if config.train.rationale_source in PAPER_SOURCES:  # the paper authors' teacher outputs, not ours
        rationales = load_paper_rationales(paper_folder(config.train.paper_rationales, cache_root()), config.task.name,
                                           config.train.rationale_source, task_data.train, filter=config.teacher.filter)
    elif config.train.uses_teacher and folder.rationales_path.exists():
        rationales = load_rationales(folder.rationales_path, on_event=emit)
    rationales = share_rationales(rationales)
    student = resolve_model(config.train.student)
    data = _with_rationale_source(task_data, config.train.rationale_source)
    teacher_rationales = rationales if config.train.rationale_source in ("teacher", *PAPER_SOURCES) else None
    candidates = _candidates(config)
    results: dict[str, dict[str, Any]] = {}
    for number, candidate in enumerate(candidates, 1):
        if len(candidates) > 1:
            emit(Log(message=f"training candidate {number} of {len(candidates)}: {candidate.label}"))
        settings = dataclasses.replace(config.train.for_method(candidate.method), alpha=candidate.alpha)
        result = train(student, data, rationales if candidate.baseline else teacher_rationales, settings,
                       _candidate_dir(folder, candidate), resume=True, on_event=_tagged(emit, candidate),
                       should_stop=should_stop)
        if any_stop(should_stop, result):
            raise Stopped()
        results[candidate.name] = _summary_dict(result)
    _report_memory("train", emit)
    chosen, reason = choose(candidates, {name: r.get("best_validation_accuracy") for name, r in results.items()},
                            by_validation=config.train.select == "validation")
    if distributed.is_main():  # the other ranks have no validation scores; rank 0 chooses
        emit(CandidateChosen(candidate=chosen.name, label=chosen.label, reason=reason))
    configured = next(c for c in candidates if c.configured)
    folder.update_metrics(
        train={**results[configured.name], "train_peak_memory": mx.get_peak_memory()},
        candidates=[{"name": c.name, "label": c.label, "method": c.method, "alpha": c.alpha,
                     "folder": str(_candidate_dir(folder, c).relative_to(folder.path)), "chosen": c is chosen,
                     **{k: results[c.name].get(k) for k in CANDIDATE_TRAIN_KEYS}} for c in candidates],
        selection={"by": config.train.select, "chosen": chosen.name, "label": chosen.label, "reason": reason},
        **({"baselines": {c.method: results[c.name] for c in candidates if c.baseline}}
           if any(c.baseline for c in candidates) else {}),
    )
    return f"exporting {chosen.label}: {reason}" if len(candidates) > 1 else (
        f"best validation accuracy {results[chosen.name]['best_validation_accuracy'] * 100:.1f}%"
        if results[chosen.name].get("best_validation_accuracy") is not None else "trained")


# What metrics.json keeps of each candidate's training.
CANDIDATE_TRAIN_KEYS = ("steps", "best_step", "best_validation_accuracy", "examples", "rationale_rows",
                        "restating_dropped")


def _trained_student(train_dir: Path) -> Path:
    student = train_dir / "student"
    if not (student / "config.json").exists():
        raise DistillError(f"no trained student in {student}; rerun with --redo train")
    return student


def _score(config: RunConfig, method: str, train_dir: Path, predictions: Path, task_data, on_event: OnEvent):
    """The one scoring of the test split: a trained student's answers through ``train.evaluate``."""
    model, tokenizer = load_student(_trained_student(train_dir))
    summary = evaluate(model, tokenizer, config.task.name, task_data.test,
                       batch_size=config.train.trainer.eval_batch_size,
                       max_tokens=config.train.for_method(method).answer_max_tokens,
                       predictions_path=predictions, method=method, split="test", on_event=on_event)
    return model, tokenizer, summary


def _chosen(config: RunConfig, metrics: dict[str, Any]) -> Candidate:
    candidates = _candidates(config)
    name = metrics.get("selection", {}).get("chosen")
    return next((c for c in candidates if c.name == name), next(c for c in candidates if c.configured))


def _stage_evaluate(config: RunConfig, folder: RunFolder, task_data, emit: OnEvent) -> str:
    metrics = folder.read_metrics()
    chosen = _chosen(config, metrics)
    # Every candidate's test score, once, for the report; the choice was made on validation before.
    scored: dict[str, Any] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    model = tokenizer = None
    for candidate in _candidates(config):
        where = _candidate_dir(folder, candidate)
        loaded, loaded_tokenizer, summary = _score(config, candidate.method, where, where / "predictions_test.jsonl",
                                                   task_data, _tagged(emit, candidate))
        scored[candidate.name] = summary
        records[candidate.name] = read_jsonl_records(where / "predictions_test.jsonl")
        emit(Log(message=f"{candidate.label}: test accuracy {summary.accuracy * 100:.1f}% "
                         f"({summary.correct}/{summary.total})" + (" (exported)" if candidate == chosen else "")))
        if candidate == chosen:
            model, tokenizer = loaded, loaded_tokenizer
    shutil.copyfile(_candidate_dir(folder, chosen) / "predictions_test.jsonl", folder.predictions_path)
    summary = scored[chosen.name]
    latencies = []
    for example in task_data.test[:LATENCY_QUESTIONS]:
        start = time.perf_counter()
        generate(model, tokenizer, [predict_prompt(example.input)], max_tokens=config.train.for_method(chosen.method).answer_max_tokens)
        latencies.append(time.perf_counter() - start)
    candidates = [{**entry, "test_accuracy": scored[entry["name"]].accuracy, "test_correct": scored[entry["name"]].correct,
                   "test_total": scored[entry["name"]].total} for entry in metrics.get("candidates", []) if entry.get("name") in scored]
    baselines = metrics.get("baselines", {})
    for candidate in _candidates(config):
        if candidate.baseline:
            baselines[candidate.method] = {**baselines.get(candidate.method, {}),
                                           "test_accuracy": scored[candidate.name].accuracy}
    comparison = _payoff(config, metrics, records)
    if comparison:
        emit(Log(message=comparison["verdict"]))
    folder.update_metrics(
        student_test_accuracy=summary.accuracy,
        student_test=_summary_dict(summary),
        student_method=chosen.method,
        student_candidate=chosen.name,
        student_parameters=count_parameters(model),
        student_seconds_per_answer=statistics.median(latencies) if latencies else None,
        candidates=candidates,
        **({"baselines": baselines} if baselines else {}),
        **({"payoff": comparison} if comparison else {}),
    )
    return f"test accuracy {summary.accuracy * 100:.1f}% ({chosen.label})"


def _payoff(config: RunConfig, metrics: dict[str, Any], records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Step-by-step (its α chosen on validation) against finetune on the same test questions; {} without both."""
    candidates = _candidates(config)
    step_by_step = [c for c in candidates if c.method == "step-by-step"]
    finetune = next((c for c in candidates if c.method == "finetune"), None)
    if not step_by_step or finetune is None or not records.get(finetune.name):
        return {}
    validation = {e["name"]: e.get("best_validation_accuracy") for e in metrics.get("candidates", [])}
    best, _ = choose(step_by_step, validation, by_validation=config.train.select == "validation"
                     ) if any(c.configured for c in step_by_step) else (step_by_step[0], "")
    if not records.get(best.name):
        return {}
    return {"step_by_step": best.name, "step_by_step_label": best.label, "finetune": finetune.name,
            **payoff(records[best.name], records[finetune.name])}


def _stage_export(folder: RunFolder, config: RunConfig) -> str:
    chosen = _chosen(config, folder.read_metrics())
    temp = folder.path / ".student.tmp"
    if temp.exists():
        shutil.rmtree(temp)
    shutil.copytree(_trained_student(_candidate_dir(folder, chosen)), temp)
    publish_dir(temp, folder.student_dir)
    return f"{chosen.label} saved to {folder.student_dir}"
