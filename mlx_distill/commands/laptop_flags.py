"""``--allow-sleep`` and ``--no-notify`` for the standalone stages (``generate``, ``train``), as
``mlx-distill run`` has them; the rest of a run's ``[run]`` section keeps its defaults."""

from __future__ import annotations

import argparse


def add_laptop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-sleep", action="store_true",
                        help="let the Mac sleep while the stage works (default: kept awake, as run.keep_awake)")
    parser.add_argument("--no-notify", action="store_true",
                        help="no desktop notification or bell when the stage ends, fails or pauses (run.notify)")


def laptop_settings(args: argparse.Namespace):
    """A run's ``[run]`` section (``mlx_distill.config.RunSection``) with the command's flags."""
    from mlx_distill.config import RunSection  # the config pulls in the data package: not for --help

    return RunSection(keep_awake=not args.allow_sleep, notify=not args.no_notify)
