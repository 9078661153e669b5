"""`mlx-distill chat STUDENT`: ask a trained student questions in the terminal, one per line.

The answer comes from the `predict:` task alone (fast, short); `--explain` also streams the
student's own `explain:` rationale. Reads standard input, so it also answers a piped file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mlx_distill.errors import DistillError
from mlx_distill.methods import explain_prompt, predict_prompt

HELP = "Ask a trained student questions line by line (a run folder or a student folder)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a run folder (runs/NAME), its student/ folder, or any T5 student folder")
    parser.add_argument("--explain", action="store_true", help="also show the student's explain: rationale")
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length limit (default: 64)")


def student_folder(path: str) -> Path:
    """A folder with config.json is a student itself; a run folder means the run's trained student."""
    from mlx_distill.pipeline import exported_student  # the pipeline package imports MLX

    folder = Path(path)
    if (folder / "config.json").is_file():
        return folder
    student = exported_student(folder)
    if student is None:
        raise DistillError(f"no student in {folder}: expected a run folder or a folder with config.json; "
                           "train one with `mlx-distill run CONFIG` or `mlx-distill demo`")
    return student


def _stream(model, tokenizer, prompt: str, max_tokens: int, out) -> None:
    from mlx_distill.student import stream_generate

    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        out.write(response.text)
        out.flush()


def main(args: argparse.Namespace) -> int:
    from mlx_distill.student import load_student  # MLX and the tokenizer: only when a chat starts

    folder = student_folder(args.student)
    model, tokenizer = load_student(folder)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"student {folder} — type a question, an empty line or Ctrl-D quits", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        question = line.strip().replace("\\n", "\n")
        if not question:
            if line and not interactive:
                continue
            return 0
        start = time.perf_counter()
        _stream(model, tokenizer, predict_prompt(question), args.max_tokens, sys.stdout)
        seconds = time.perf_counter() - start
        print()
        if args.explain:
            print("  because: ", end="")
            _stream(model, tokenizer, explain_prompt(question), 256, sys.stdout)
            print()
        if interactive:
            print(f"  ({seconds:.2f} s)", file=sys.stderr)
