"""`mlx-distill eval`: a trained student's accuracy on a task split, with per-example predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlx_distill.methods import METHODS, answer_max_tokens

HELP = "Score a trained student on a task split by generation; write per-example predictions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="svamp, cqa, esnli, anli, or jsonl/csv for your own data")
    parser.add_argument("--data", required=True, help="the dataset file or folder")
    parser.add_argument("--student", required=True, help="the trained student folder (e.g. OUT/student)")
    parser.add_argument("--split", default="test", choices=("test", "validation", "train"))
    parser.add_argument("--out", default=None,
                        help="predictions JSONL (default: predictions_<split>.jsonl beside the student folder)")
    parser.add_argument("--method", default=None, choices=METHODS,
                        help="how answers are read (default: as recorded in the student folder)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts generated together")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="answer length limit (default: 64, or 256 for cot students)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--seed", type=int, default=0, help="seed used to carve validation/test splits")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--columns", default=None, metavar="KEY=COLUMN,...",
                        help="for jsonl/csv data: your column names, e.g. input=question,label=answer")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.data import load_task, parse_columns
    from mlx_distill.errors import DistillError
    from mlx_distill.files import check_output_file
    from mlx_distill.train import evaluate, student_method
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.student import check_student, load_student

    for flag in ("batch_size", "max_tokens", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise DistillError(f"--{flag.replace('_', '-')} {value} must be at least 1")
    if args.seed < 0:
        raise DistillError(f"--seed {args.seed} must not be negative")
    columns = parse_columns(args.columns) if args.columns is not None else None
    out = Path(args.out) if args.out else Path(args.student).resolve().parent / f"predictions_{args.split}.jsonl"
    check_output_file(out, "--out")
    check_student(args.student)
    method = args.method or student_method(args.student)
    max_tokens = args.max_tokens or answer_max_tokens(method)
    data = load_task(args.task, args.data, seed=args.seed, columns=columns)
    examples = list(getattr(data, args.split))[: args.limit]
    if not examples:
        raise DistillError(f"the {args.split} split of {args.data} is empty; choose another --split")
    model, tokenizer = load_student(args.student, dtype=args.dtype)
    printer = ProgressPrinter(quiet=args.quiet)
    try:
        summary = evaluate(model, tokenizer, args.task, examples, batch_size=args.batch_size, max_tokens=max_tokens,
                           predictions_path=out, method=method, split=args.split, on_event=printer)
    finally:
        printer.close()
    print(f"{args.split} accuracy: {summary.accuracy * 100:.1f}% ({summary.correct}/{summary.total}) "
          f"in {summary.seconds:.1f}s; predictions in {summary.predictions_path}")
    return 0
