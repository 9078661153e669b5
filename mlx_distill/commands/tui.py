"""`mlx-distill tui` (and `mlx-distill` alone): the terminal UI."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Open the terminal UI: start a run, watch it live, chat with the student (the default)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="folder holding the run folders (default: ./runs)")
    parser.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                        help="open this run folder's dashboard (attaches to a live run or replays a finished one)")
    parser.add_argument("--chat", action="store_true", help="with --run: open the chat instead of the dashboard")
    parser.add_argument("--light", action="store_true", help="start in the light theme")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.errors import DistillError
    from mlx_distill.tui.app import DARK_THEME, LIGHT_THEME, DistillApp

    if args.run is not None and not args.run.is_dir():
        raise DistillError(f"run folder {args.run} does not exist; list runs with `mlx-distill tui`")
    runs_dir = args.runs_dir if args.run is None or args.runs_dir != Path("runs") else args.run.resolve().parent
    app = DistillApp(runs_dir, run_dir=args.run, mode="chat" if args.chat else None)
    app.theme = LIGHT_THEME if args.light else DARK_THEME
    app.run()
    return int(app.return_code or 0)
