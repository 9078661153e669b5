"""`mlx-distill data CONFIG`: what a run would train and test on, before any model is loaded."""
from __future__ import annotations

import argparse

HELP = "Check a run config's data: split sizes, labels, rationale coverage, longest inputs, examples."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run config TOML file")


def main(args: argparse.Namespace) -> int:
    raise NotImplementedError
