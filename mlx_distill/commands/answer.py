"""`mlx-distill answer RUN --in questions.jsonl --out answers.jsonl`: answer a file, batched.

The input is a ``jsonl`` or ``csv`` file as for the ``jsonl``/``csv`` tasks (``input``, optional
``id`` and ``label``; ``--columns`` maps other names). Answers are appended as they are made, so
Ctrl-C or a crash loses at most a batch and the same command resumes. With labels in the file
the accuracy is printed too.
"""

from __future__ import annotations

import argparse
import sys
import time

from mlx_distill.errors import DistillError

HELP = "Answer a .jsonl/.csv file of questions with a trained student (resumable; accuracy if labelled)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a run folder (runs/NAME), its student/ folder, or any T5 student folder")
    parser.add_argument("--in", dest="questions", required=True, help="questions: a .jsonl or .csv file")
    parser.add_argument("--out", required=True, help="answers (JSONL); ids already in it are skipped")
    parser.add_argument("--columns", default=None, metavar="KEY=COLUMN,...",
                        help="your column names, e.g. input=question,label=answer,id=qid")
    parser.add_argument("--explain", action="store_true", help="also write each rationale")
    parser.add_argument("--batch-size", type=int, default=32, help="questions answered together (default: 32)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="answer length limit (default: 64, or 256 for cot students)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class _ProgressBar:
    """One line on a terminal (redrawn), a line every few seconds elsewhere."""

    def __init__(self, quiet: bool, interval: float = 5.0):
        from mlx_distill.progress import bar, format_duration

        self.bar, self.format_duration = bar, format_duration
        self.quiet, self.interval = quiet, interval
        self.live = sys.stderr.isatty()
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.quiet or (not self.live and now - self.last < self.interval and done < total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = self.format_duration((total - done) / rate if rate else None)
        text = f"answering {self.bar(done, total)} {done}/{total}  {rate:.1f} q/s  eta {eta}"
        print(("\r" + text) if self.live else text, end="" if self.live and done < total else "\n",
              file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlx_distill.commands.chat import student_folder
    from mlx_distill.commands.stopping import stop_on_signals
    from mlx_distill.data import parse_columns
    from mlx_distill.files import check_output_file, exclusive_lock, lock_path_for
    from mlx_distill.methods import MAX_INPUT_TOKENS, answer_max_tokens
    from mlx_distill.serve import check_explainable
    from mlx_distill.serve.questions import answer_file, read_questions
    from mlx_distill.commands.ask import check_max_tokens
    from mlx_distill.student import load_student
    from mlx_distill.train import read_student_meta, student_method

    if args.batch_size < 1:
        raise DistillError(f"--batch-size {args.batch_size} must be at least 1")
    check_max_tokens(args.max_tokens)
    columns = parse_columns(args.columns) if args.columns is not None else None
    if columns and "rationale" in columns:
        raise DistillError("--columns: rationale is not read here; map input, label or id")
    out = check_output_file(args.out, "--out")
    if Path(args.questions).resolve() == out.resolve():
        raise DistillError(f"--out {out} is the questions file; give another file for the answers")
    rows = read_questions(args.questions, columns)
    folder = student_folder(args.student)
    method = student_method(folder)
    if args.explain:
        check_explainable(method)
    task = read_student_meta(folder).get("task")
    with exclusive_lock(lock_path_for(out), f"--out {out}"):
        model, tokenizer = load_student(folder)
        with stop_on_signals("stopping after the current batch (Ctrl-C again to stop at once)…") as should_stop:
            summary = answer_file(model, tokenizer, rows, out, method=method, task=task, batch_size=args.batch_size,
                                  max_tokens=args.max_tokens or answer_max_tokens(method), explain=args.explain,
                                  on_progress=_ProgressBar(args.quiet), should_stop=should_stop)
    if summary.skipped:
        print(f"{summary.skipped} already answered in {out}, skipped", file=sys.stderr)
    if summary.truncated:
        print(f"note: {summary.truncated} questions were longer than the student reads ({MAX_INPUT_TOKENS} "
              "tokens); they were answered from their beginning", file=sys.stderr)
    rate = summary.answered / summary.seconds if summary.seconds else 0.0
    print(f"answered {summary.answered} questions in {summary.seconds:.1f} s ({rate:.1f}/s) -> {out}",
          file=sys.stderr)
    if summary.accuracy is not None:
        print(f"accuracy {summary.accuracy:.1%} ({summary.correct}/{summary.labelled} labelled answers)")
    if summary.stopped:
        print("stopped; rerun the same command to answer the rest", file=sys.stderr)
        return 130
    return 0
