"""`mlx-distill run CONFIG.toml`: the whole job headless, resumable stage by stage."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlx_distill.commands.stopping import stop_on_signals
from mlx_distill.progress import ProgressPrinter

HELP = "Run a distillation config headless: data, teacher, training, evaluation, export."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run config TOML file (see examples/svamp.toml)")
    parser.add_argument("--run-dir", help="the run folder (default: <runs_dir>/<name> from the config)")
    parser.add_argument("--redo", metavar="STAGE", help="discard this stage and every later one, then run")
    parser.add_argument("--quiet", action="store_true", help="print only stage boundaries, results and errors")
    parser.add_argument("--allow-sleep", action="store_true",
                        help="let the Mac sleep while a stage works (default: kept awake; run.keep_awake)")
    parser.add_argument("--no-notify", action="store_true",
                        help="no desktop notification or bell when the run ends, fails or pauses (run.notify)")
    parser.add_argument("--hosts", metavar="HOSTS_JSON",
                        help="run on several Macs: start this run on every host of an mlx.launch hosts file "
                             "(see docs/multi-mac.md); the teacher and training are shared between them")
    parser.add_argument("--backend", help="with --hosts: mlx.launch backend (ring, jaccl; default: the hosts "
                                          "file's, else ring)")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.config import load_config

    config = load_config(args.config)
    config.run.keep_awake = config.run.keep_awake and not args.allow_sleep
    config.run.notify = config.run.notify and not args.no_notify
    if args.hosts:
        return _launch_on_hosts(args, config)
    return run_with_signals(config, run_dir=args.run_dir, redo=args.redo, quiet=args.quiet)


def _launch_on_hosts(args: argparse.Namespace, config) -> int:
    """Start this same command on every host through mlx.launch (see mlx_distill.distributed.launch)."""
    from mlx_distill.distributed import launch_command, run_launched  # imports MLX
    from mlx_distill.pipeline import run_folder_for  # imports MLX and the stages

    folder = run_folder_for(config, args.run_dir)
    run_args = [str(Path(args.config).resolve()), "--run-dir", str(folder.path.resolve())]
    run_args += ["--redo", args.redo] if args.redo else []
    run_args += ["--quiet"] if args.quiet else []
    run_args += ["--allow-sleep"] if args.allow_sleep else []
    run_args += ["--no-notify"] if args.no_notify else []
    command = launch_command(args.hosts, run_args, backend=args.backend)
    with stop_on_signals("stopping every host after the current batch (Ctrl-C again to stop at once)…") as should_stop:
        return run_launched(command, folder.events_path, should_stop)


def run_with_signals(config, run_dir: str | Path | None = None, redo: str | None = None, quiet: bool = False) -> int:
    """Run the pipeline with progress on stderr; the first Ctrl-C (or SIGTERM) stops cleanly
    after saving finished work, a second one stops at once. Returns the exit code."""
    # Heavy (MLX, the stages): imported when a run starts, not for `mlx-distill --help`.
    from mlx_distill import distributed
    from mlx_distill.pipeline import run_folder_for, run_pipeline

    worker = not distributed.is_main()  # a rank > 0 under mlx.launch: rank 0 reports the run
    printer = ProgressPrinter(quiet=quiet or worker)
    on_event = distributed.relay_to_stdout if worker and os.environ.get(distributed.RELAY_ENV) else printer
    try:
        with stop_on_signals() as should_stop:
            metrics = run_pipeline(config, run_dir, redo=redo, on_event=on_event, should_stop=should_stop)
    finally:
        printer.close()
    if metrics.get("stopped"):
        if not worker:
            folder = run_folder_for(config, run_dir)
            print(f"stopped; finished work is kept in {folder.path}. Resume: mlx-distill run {folder.config_path}",
                  file=sys.stderr)
        return 130
    if worker:
        return 0
    folder = run_folder_for(config, run_dir)
    for line in payoff_lines(metrics):
        print(line)
    accuracy = metrics.get("student_test_accuracy")
    if isinstance(accuracy, float):
        print(f"student test accuracy: {accuracy * 100:.1f}%")
    print(f"run folder: {folder.path} (report: {folder.report_path})")
    return 0


def payoff_lines(metrics: dict) -> list[str]:
    """The run's last words: each candidate's validation and test accuracy, the exported one marked,
    and step-by-step against finetune with its interval and verdict."""
    candidates = metrics.get("candidates") or []
    lines = []
    if len(candidates) > 1:
        for entry in candidates:
            lines.append(f"  {'→' if entry.get('chosen') else ' '} {entry.get('label', entry.get('name')):<22} "
                         f"validation {_percent(entry.get('best_validation_accuracy'))} · "
                         f"test {_percent(entry.get('test_accuracy'))}")
    selection = metrics.get("selection") or {}
    if selection and len(candidates) > 1:
        lines.append(f"exported: {selection.get('label')} ({selection.get('reason')})")
    comparison = metrics.get("payoff")
    if comparison:
        lines.append(f"{comparison['step_by_step_label']} {_percent(comparison['step_by_step_accuracy'])} vs finetune "
                     f"{_percent(comparison['finetune_accuracy'])} on {comparison['questions']} test questions: "
                     f"{comparison['verdict']}")
    return lines


def _percent(value) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "-"
