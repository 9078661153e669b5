"""The one way to stop: SIGINT and SIGTERM become a ``should_stop`` flag that stages poll.

The first signal asks the running stage to stop after its current batch or step (finished work
is saved); a second one stops at once with KeyboardInterrupt. Only the CLI installs this.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

from mlx_distill.events import ShouldStop

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(message: str = "stopping after the current batch (Ctrl-C again to stop at once)…",
                    ) -> Iterator[ShouldStop]:
    """Within the block, SIGINT/SIGTERM set the returned flag instead of raising."""
    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{message}", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return
    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield stop.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
