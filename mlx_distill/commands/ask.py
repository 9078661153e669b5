"""`mlx-distill ask RUN "question"`: one answer on standard output, for scripts.

``--explain`` adds the student's rationale on a second line (``because: ...``); ``--json`` prints
one JSON object instead (``question``, ``answer``, ``rationale``, ``finish_reason``, ``truncated``).
"""

from __future__ import annotations

import argparse
import json
import sys

from mlx_distill.errors import DistillError
from mlx_distill.methods import MAX_INPUT_TOKENS

HELP = "Ask a trained student one question; the answer goes to standard output."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a run folder (runs/NAME), its student/ folder, or any T5 student folder")
    parser.add_argument("question", help="the question ('-' reads it from standard input)")
    parser.add_argument("--explain", action="store_true", help="also print the student's rationale")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="answer length limit (default: 64, or 256 for cot students)")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.commands.chat import student_folder
    from mlx_distill.methods import answer_max_tokens
    from mlx_distill.serve import Question, answer_batch, check_explainable
    from mlx_distill.train import student_method
    from mlx_distill.student import load_student

    check_max_tokens(args.max_tokens)
    question = _question(args.question).strip()
    if not question:
        raise DistillError("the question is empty; give one, e.g. mlx-distill ask runs/demo \"What is 2 + 3?\"")
    folder = student_folder(args.student)
    method = student_method(folder)
    if args.explain:
        check_explainable(method)
    model, tokenizer = load_student(folder)
    (answer,) = answer_batch(model, tokenizer, method, [Question(
        question, explain=args.explain, max_tokens=args.max_tokens or answer_max_tokens(method))])
    if answer.truncated:
        print(f"note: the question is longer than the student reads ({MAX_INPUT_TOKENS} tokens); "
              "it answered from the beginning", file=sys.stderr)
    if args.json:
        record = {"question": question, "answer": answer.text, "finish_reason": answer.finish_reason,
                  "truncated": answer.truncated}
        if args.explain:
            record["rationale"] = answer.rationale
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(answer.text)
        if args.explain:
            print(f"because: {answer.rationale}")
    return 0


def _question(argument: str) -> str:
    """The question from the argument or (``-``) standard input, as text; non-UTF-8 bytes are refused."""
    where = "standard input" if argument == "-" else "the question"
    if argument == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DistillError(f"{where} is not UTF-8 text (byte {error.start}); give UTF-8 text") from None
    try:
        argument.encode("utf-8")
    except UnicodeEncodeError as error:  # undecodable bytes in argv arrive as lone surrogates
        raise DistillError(f"{where} is not UTF-8 text (character {error.start}); give UTF-8 text") from None
    return argument


def check_max_tokens(value: int | None) -> None:
    """Refuse a ``--max-tokens`` below 1 or above what a student writes (`MAX_NEW_TOKENS`)."""
    from mlx_distill.student import MAX_NEW_TOKENS

    if value is not None and value < 1:
        raise DistillError(f"--max-tokens {value} must be at least 1")
    if value is not None and value > MAX_NEW_TOKENS:
        raise DistillError(f"--max-tokens {value} is more than a student writes; give at most {MAX_NEW_TOKENS}")
