"""The installed `mlx-distill` in a real terminal (tmux): open, start the demo run, wait for
training, open the chat, ask a question, quit with exit code 0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MLX_DISTILL = Path(sys.executable).parent / "mlx-distill"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_for(session: str, pattern: str, timeout: float) -> str:
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = tmux("capture-pane", "-t", session, "-p")
        if re.search(pattern, screen):
            return screen
        time.sleep(1)
    raise AssertionError(f"{pattern!r} did not appear within {timeout} s; the screen was:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_demo_run_then_chat_in_a_real_terminal(tmp_path):
    assert MLX_DISTILL.exists(), "install the package first: pip install -e ."
    session = f"mlx-distill-{uuid.uuid4().hex[:8]}"
    command = f"cd {tmp_path} && {MLX_DISTILL}; echo EXITED rc=$?; sleep 120"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "32", command)
    try:
        wait_for(session, r"No runs yet", 60)
        tmux("send-keys", "-t", session, "d")  # the offline demo
        wait_for(session, r"running: (data|teacher|train)", 120)
        # wait for training to finish (the student is exported after evaluation)
        screen = wait_for(session, r"run finished|failed", 900)
        assert "failed" not in screen, screen
        assert re.search(r"step (\d+)/\1", screen) or re.search(r"✓ (finetune|step-by-step)", screen), screen
        tmux("send-keys", "-t", session, "F4")
        wait_for(session, r"student: demo/", 30)
        tmux("send-keys", "-t", session, "-l", "What type of creature is the tortoise?")
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for(session, r"\d+\.\d\d s ─", 120)  # the reply's latency: the answer is complete
        assert "What type of creature is the tortoise?" in screen
        tmux("send-keys", "-t", session, "C-q")
        screen = wait_for(session, r"EXITED rc=\d+", 30)
        assert "EXITED rc=0" in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    run_dir = tmp_path / "runs" / "demo"
    assert (run_dir / "student" / "config.json").exists()  # the export stage's folder
    assert (run_dir / "chat.jsonl").read_text().count("tortoise") == 1
