"""`mlx-distill generate`: the teacher writes rationales for a task's training examples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlx_distill.commands.laptop_flags import add_laptop_arguments
from mlx_distill.methods import FILTERS, TEACHER_BATCH_SIZE

HELP = "Have a teacher LLM write step-by-step rationales for a task (resumable JSONL)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True,
                        help="svamp, cqa, esnli, anli, or jsonl/csv for your own data")
    parser.add_argument("--data", default=None,
                        help="the dataset file or folder, or a hub dataset hf:ORG/NAME[:CONFIG][@REVISION] "
                             "(default for svamp, cqa, esnli, anli: the task's hub copy)")
    parser.add_argument("--teacher", required=True,
                        help="local model folder, Hugging Face hub id, catalog name, or a GGUF model: a .gguf file, "
                             "ollama:NAME[:TAG] or lmstudio:PUBLISHER/MODEL (converted once into the user cache)")
    parser.add_argument("--out", required=True, help="the rationale JSONL file (resumed when it exists)")
    parser.add_argument("--split", default="train", choices=("train", "validation", "test"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--batch-size", type=int, default=TEACHER_BATCH_SIZE,
                        help=f"questions generated together (default: {TEACHER_BATCH_SIZE}, as teacher.batch_size)")
    parser.add_argument("--max-tokens", type=int, default=256, help="generated tokens per answer at most")
    parser.add_argument("--filter", default="gold", choices=FILTERS,
                        help="gold: keep answers that agree with the label; all: keep all; "
                             "teacher: trust the teacher (unlabeled data)")
    parser.add_argument("--prompt-file", default=None, help="your few-shot prompt file with {input}")
    parser.add_argument("--rationalize", action="store_true", help="show the gold answer in the prompt")
    parser.add_argument("--reject-restating", action="store_true",
                        help="also reject rationales that only restate the answer (counted either way)")
    parser.add_argument("--samples", type=int, default=1, help="answers per question, majority vote")
    parser.add_argument("--quantize", type=int, choices=(4, 8), default=None,
                        help="quantize an unquantized teacher on load")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "native"),
                        help="auto: float32 on a CPU-only device, as stored on Apple GPU")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="re-encode the few-shot prefix for every question (for comparison)")
    parser.add_argument("--columns", default=None, metavar="KEY=COLUMN,...",
                        help="for jsonl/csv data: your column names, e.g. input=question,label=answer")
    parser.add_argument("--quiet", action="store_true")
    add_laptop_arguments(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a bad flag value in one line, before anything is read or loaded."""
    from mlx_distill.errors import DistillError

    for flag in ("limit", "batch_size", "max_tokens", "samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise DistillError(f"--{flag.replace('_', '-')} {value} must be at least 1")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.commands.stopping import stop_on_signals
    from mlx_distill.data import load_task, parse_columns
    from mlx_distill.files import check_output_file
    from mlx_distill.commands.laptop_flags import laptop_settings
    from mlx_distill.machine import laptop_stage
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.teacher import check_teacher, generate_rationales

    check_arguments(args)
    columns = parse_columns(args.columns) if args.columns is not None else None
    check_output_file(args.out, "--out")
    check_teacher(args.teacher)
    data = load_task(args.task, args.data, columns=columns)
    examples = getattr(data, args.split)
    printer = ProgressPrinter(quiet=args.quiet)
    try:
        out = Path(args.out)
        # Awake while the teacher works, paused on a low battery, MLX's memory limit, a word at the end.
        with stop_on_signals() as should_stop, laptop_stage(
                laptop_settings(args), "teacher", f"mlx-distill generate ({out.name})",
                out.with_name(out.name + ".continue"), printer, should_stop) as (on_event, stage_stop):
            summary = generate_rationales(
                examples, args.task, args.teacher, args.out, batch_size=args.batch_size,
                max_tokens=args.max_tokens, filter=args.filter, limit=args.limit, prompt_file=args.prompt_file,
                rationalize=args.rationalize, samples=args.samples, quantize=args.quantize,
                precision=args.precision, prefix_cache=not args.no_prefix_cache,
                reject_restating=args.reject_restating, on_event=on_event,
                should_stop=stage_stop)
    finally:
        printer.close()
    if summary.stopped:
        print(f"stopped; {summary.done} finished records are kept in {summary.path}. Resume: the same command",
              file=sys.stderr)
        return 130
    print(summary_line(summary))
    return 0


def summary_line(summary) -> str:
    """The line `generate` ends with (``summary``: a ``mlx_distill.teacher.RationaleSummary``)."""
    thinking = f", {summary.thinking} had <think> blocks stripped" if summary.thinking else ""
    return (f"{summary.done}/{summary.total} examples in {summary.path}: {summary.accepted} accepted "
            f"({summary.accept_rate:.0%}), {summary.restating} of them only restate the answer, "
            f"{summary.parse_failures} parse failures{thinking}; "
            f"{summary.generated_tokens} tokens generated at {summary.generation_tps:.1f} tok/s")
