"""The `mlx-distill` dispatcher: subcommands, and what it does without a terminal."""

from __future__ import annotations

import subprocess
import sys

from mlx_distill.cli import COMMAND_NAMES, build_parser


def test_every_command_has_help_and_a_main():
    parser = build_parser()
    for name in COMMAND_NAMES:
        args = parser.parse_args([name, *_required(name)])
        assert callable(args._main), name


def _required(name: str) -> list[str]:
    return {
        "run": ["c.toml"],
        "generate": ["--task", "jsonl", "--data", "d", "--teacher", "t", "--out", "o"],
        "train": ["--task", "jsonl", "--data", "d", "--student", "s", "--out", "o"],
        "eval": ["--task", "jsonl", "--data", "d", "--student", "s"],
        "chat": ["runs/x"],
        "try": ["c.toml"],
        "fetch-data": ["svamp"],
        "data": ["c.toml"],
        "ask": ["runs/x", "question"],
        "answer": ["runs/x", "--in", "q.jsonl", "--out", "a.jsonl"],
        "serve": ["runs/x"],
        "export": ["runs/x"],
        "push": ["runs/x", "me/x"],
    }.get(name, [])


def test_bare_command_without_a_terminal_prints_help_and_exits_2():
    done = subprocess.run([sys.executable, "-m", "mlx_distill"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout.startswith("usage: mlx-distill")
    assert "\x1b[" not in done.stdout  # no escape codes: the UI did not start
    assert done.stderr.strip() == "no terminal: give a command (the terminal UI needs one)"
