"""`mlx-distill run CONFIG.toml`: the whole job headless, resumable stage by stage."""

from __future__ import annotations

import argparse

HELP = "Run a distillation config headless: data, teacher, training, evaluation, export."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run config TOML file (see examples/svamp.toml)")
    parser.add_argument("--run-dir", help="the run folder (default: <runs_dir>/<name> from the config)")
    parser.add_argument("--redo", metavar="STAGE", help="discard this stage and every later one, then run")
    parser.add_argument("--quiet", action="store_true", help="print only stage boundaries, results and errors")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.config import load_config

    config = load_config(args.config)
    return run_with_signals(config, run_dir=args.run_dir, redo=args.redo, quiet=args.quiet)


def run_with_signals(config, run_dir=None, redo=None, quiet=False) -> int:
    """Run the pipeline with progress on stderr; the first Ctrl-C (or SIGTERM) stops cleanly
    after saving finished work, a second one stops at once."""
    import signal
    import sys
    import threading

    from mlx_distill.pipeline import run_folder_for, run_pipeline
    from mlx_distill.progress import ProgressPrinter

    stop = threading.Event()

    def request_stop(signum, frame):
        if stop.is_set() or metrics.get("stopped"):
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current batch (Ctrl-C again to stop at once)…", file=sys.stderr)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    printer = ProgressPrinter(quiet=quiet)
    try:
        metrics = run_pipeline(config, run_dir, redo=redo, on_event=printer, should_stop=stop.is_set)
    finally:
        printer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    folder = run_folder_for(config, run_dir)
    if stop.is_set() or metrics.get("stopped"):
        print(f"stopped; finished work is kept in {folder.path}. Resume: mlx-distill run {folder.config_path}",
              file=sys.stderr)
        return 130
    accuracy = metrics.get("student_test_accuracy")
    if isinstance(accuracy, float):
        print(f"student test accuracy: {accuracy * 100:.1f}%")
    print(f"run folder: {folder.path} (report: {folder.report_path})")
    return 0
