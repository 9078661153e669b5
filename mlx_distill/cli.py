"""`mlx-distill`: one subcommand per job; with no subcommand it opens the terminal UI.

Each subcommand lives in ``mlx_distill.commands.<name>`` with ``HELP``, ``add_arguments(parser)``
and ``main(args) -> int``; command modules import nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from types import ModuleType

from mlx_distill.errors import DistillError

# Listed in the order `--help` shows them.
COMMAND_NAMES = ("run", "demo", "try", "fetch-data", "data", "generate", "train", "eval", "chat", "ask", "answer", "serve", "export", "push",
                 "models", "tui", "doctor")


# A command whose name is not a valid module name.
_MODULE_OF = {"try": "try_prompt", "fetch-data": "fetch_data", "data": "data_check"}


def _command_modules() -> dict[str, ModuleType]:
    modules = {}
    for name in COMMAND_NAMES:
        module_name = f"mlx_distill.commands.{_MODULE_OF.get(name, name)}"
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-distill",
        description="Distil a local teacher LLM into a small T5 student, step by step, on this machine.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_main=module.main)
    return parser


def _has_terminal() -> bool:
    # The terminal UI needs one: without it, it would write escape codes to a file and never end.
    return sys.stdin.isatty() and sys.stdout.isatty()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from mlx_distill.platform import ensure_fast_blas

    ensure_fast_blas(argv)
    parser = build_parser()
    if not argv:
        if not _has_terminal():
            parser.print_help()
            print("\nno terminal: give a command (the terminal UI needs one)", file=sys.stderr)
            return 2
        argv = ["tui"] if "tui" in _command_modules() else ["--help"]
    args = parser.parse_args(argv)
    if getattr(args, "_main", None) is None:
        parser.print_help()
        return 2
    if args.command == "tui" and not _has_terminal():
        print("error: the terminal UI needs a terminal (stdin and stdout); run `mlx-distill tui` in one, "
              "or use a command such as `mlx-distill run CONFIG`", file=sys.stderr)
        return 2
    try:
        return int(args._main(args) or 0)
    except DistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        sys.stderr.close()  # the reader (e.g. `| head`) went away; nothing left to say
        return 0
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        print(f"error: disk full{where}; free some space and rerun the same command to resume "
              "(finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C); finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
