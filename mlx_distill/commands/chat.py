"""`mlx-distill chat STUDENT`: ask a trained student questions in the terminal, one per line.

The answer comes from the `predict:` task alone (fast, short); `--explain` also streams the
student's own `explain:` rationale. Reads standard input, so it also answers a piped file.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from mlx_distill.errors import DistillError
from mlx_distill.methods import MAX_INPUT_TOKENS, RATIONALE_MAX_TOKENS, explain_prompt, predict_prompt

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


def _stream(model, tokenizer, prompt: str, max_tokens: int, out) -> bool:
    """Stream one answer to ``out``; True when the question was cut to the student's input limit."""
    from mlx_distill.student import stream_generate

    truncated = False
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
        truncated = response.prompt_truncated
        out.write(response.text)
        out.flush()
    return truncated


def _read_question(number: int) -> tuple[str | None, bool]:
    """The next line of standard input (None at its end) and whether it was refused (not UTF-8)."""
    raw = sys.stdin.buffer.readline()
    if not raw:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as error:
        print(f"error: question {number} is not UTF-8 text (byte {raw[error.start]:#04x} at column "
              f"{error.start + 1}); skipped, send UTF-8 text", file=sys.stderr)
        return "", True


def main(args: argparse.Namespace) -> int:
    from mlx_distill.student import load_student  # MLX and the tokenizer: only when a chat starts

    if args.max_tokens < 1:
        raise DistillError(f"--max-tokens {args.max_tokens} must be at least 1")
    folder = student_folder(args.student)
    model, tokenizer = load_student(folder)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"student {folder} — type a question, an empty line or Ctrl-D quits", file=sys.stderr)
    refused = 0
    for number in itertools.count(1):
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line, bad = _read_question(number)
        refused += bad
        question = (line or "").strip().replace("\\n", "\n")
        if not question:
            if line is not None and (bad or not interactive):
                continue
            return 2 if refused else 0
        start = time.perf_counter()
        truncated = _stream(model, tokenizer, predict_prompt(question), args.max_tokens, sys.stdout)
        seconds = time.perf_counter() - start
        print()
        if truncated:
            print(f"note: question {number} is longer than the student reads ({MAX_INPUT_TOKENS} tokens); "
                  "it answered from the beginning", file=sys.stderr)
        if args.explain:
            print("  because: ", end="")
            _stream(model, tokenizer, explain_prompt(question), RATIONALE_MAX_TOKENS, sys.stdout)
            print()
        if interactive:
            print(f"  ({seconds:.2f} s)", file=sys.stderr)
