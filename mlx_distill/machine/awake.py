"""Keep the Mac awake while a stage works: ``caffeinate -i -w PID``, ended on release or with us."""

from __future__ import annotations

import os
import subprocess
import threading

from mlx_distill.machine.tools import find_tool

RELEASE_WAIT_SECONDS = 2.0


class KeepAwake:
    """A macOS idle-sleep assertion, held by a ``caffeinate -i -w <our pid>`` child process.

    ``hold()`` starts it (once), ``release()`` ends it; ``-w`` makes caffeinate end by itself when
    this process ends however it ends, SIGKILL included. Closing the lid on battery still sleeps
    (macOS rules). Where caffeinate is missing (Linux) or ``enabled`` is False, it does nothing.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return find_tool("caffeinate") is not None

    @property
    def held(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def hold(self) -> None:
        with self._lock:
            if not self.enabled or self.held:
                return
            tool = find_tool("caffeinate")
            if tool is None:
                return
            try:
                # Its own session: the terminal's Ctrl-C goes to the run, which then stops cleanly
                # while still holding the assertion, not to caffeinate.
                self._process = subprocess.Popen([tool, "-i", "-w", str(os.getpid())], stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                 start_new_session=True)
            except OSError:
                self._process = None

    def release(self) -> None:
        with self._lock:
            process, self._process = self._process, None
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                process.wait(timeout=RELEASE_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> "KeepAwake":
        self.hold()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
