"""`mlx-distill serve RUN_OR_STUDENT`: the student behind an OpenAI-compatible API on this machine.

Any OpenAI client (editors, notebooks, agents) can then ask it: ``GET /v1/models``,
``POST /v1/chat/completions`` and ``/v1/completions`` (``stream`` too), ``GET /health``.
Concurrent requests are decoded together by continuous batching (each joins the running batch at
the next step and leaves the step it ends). Ctrl-C answers what is in flight and exits.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlx_distill.errors import DistillError

HELP = "Serve a trained student over an OpenAI-compatible HTTP API (127.0.0.1 by default)."
API_KEY_VARIABLE = "MLX_DISTILL_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("student", help="a run folder (runs/NAME), its student/ folder, or any T5 student folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this Mac only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_VARIABLE} if set)")
    parser.add_argument("--name", default=None, help="model name clients send (default: the run's name)")
    parser.add_argument("--max-batch", type=int, default=32, help="most rows decoded together; a question with explain takes two (default: 32)")
    parser.add_argument("--queue-size", type=int, default=64,
                        help="most questions waiting; more get 429 (default: 64)")
    parser.add_argument("--max-tokens", type=int, default=512,
                        help="most max_tokens a request may ask for (default: 512)")
    parser.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                        help="refuse a request not answered this long after it arrived (408, OpenAI's "
                             "timeout error; default: no limit)")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.commands.chat import student_folder
    from mlx_distill.serve import ServeOptions, StudentServer, host_warning, run_folder_of
    from mlx_distill.serve.address import remove_server_address, write_server_address
    from mlx_distill.commands.ask import check_max_tokens

    for flag in ("max_batch", "queue_size"):
        if getattr(args, flag) < 1:
            raise DistillError(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be at least 1")
    check_max_tokens(args.max_tokens)
    if args.request_timeout is not None and not args.request_timeout > 0:
        raise DistillError(f"--request-timeout {args.request_timeout} must be a positive number of seconds")
    if not 0 <= args.port <= 65535:
        raise DistillError(f"--port {args.port} is not a port; give 0-65535")
    api_key = _api_key(args.api_key)
    folder = student_folder(args.student)
    warning = host_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    options = ServeOptions(host=args.host, port=args.port, api_key=api_key, max_batch=args.max_batch,
                           queue_size=args.queue_size, max_tokens=args.max_tokens,
                           request_timeout=args.request_timeout)
    server = StudentServer(folder, options, name=args.name)
    run_dir = run_folder_of(folder)
    marker = []

    def started(url: str) -> None:
        if run_dir is not None:
            try:
                marker.append(write_server_address(run_dir, url))
            except OSError:
                pass  # the address is only shown by the TUI; serving goes on
        print(f"serving {server.name} ({folder}) at {url}/v1"
              f"{' (API key required)' if api_key else ''}; Ctrl-C stops", file=sys.stderr, flush=True)

    try:
        server.run(started, lambda: print(f"loading the student from {folder}…", file=sys.stderr, flush=True))
    finally:
        for path in marker:
            remove_server_address(path)
    if not server.started_serving:
        print("server stopped before it served (Ctrl-C while loading the student)", file=sys.stderr)
        return 130
    print(f"server stopped; {server.summary()}", file=sys.stderr)
    return 0


def _api_key(flag: str | None) -> str | None:
    """The key from ``--api-key`` or the environment; an empty or non-ASCII key is refused."""
    if flag is not None:
        source, key = "--api-key", flag
    else:
        source, key = f"${API_KEY_VARIABLE}", os.environ.get(API_KEY_VARIABLE)
        if key == "":
            print(f"warning: ${API_KEY_VARIABLE} is set but empty; serving without an API key", file=sys.stderr)
            return None
    if key is None:
        return None
    if not key.strip():
        raise DistillError(f"{source} is empty (an unset shell variable?); give a key, or leave it out to serve "
                           "without one")
    if not key.isascii() or not key.isprintable():
        raise DistillError(f"{source} holds characters a client cannot send in an HTTP header; use printable ASCII")
    return key
