"""A run's chat history: one question and its answers a line in ``chat.jsonl`` (the UI writes it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlx_distill.files import append_jsonl, read_jsonl_records

CHAT_FILE = "chat.jsonl"


def append_chat(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one question/answer record to the run's ``chat.jsonl`` (a torn last line is healed)."""
    append_jsonl(Path(run_dir) / CHAT_FILE, {"time": time.time(), **record})


def read_chat(run_dir: Path) -> list[dict[str, Any]]:
    """The run's chat history, oldest first (bad or torn lines are skipped)."""
    return read_jsonl_records(Path(run_dir) / CHAT_FILE)
