"""Small archives in the published layout of the Distilling step-by-step authors' ``datasets.zip``,
for tests: the real archive does not reach the machines the tests run on."""

from __future__ import annotations

import json
from pathlib import Path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_copy(datasets: Path, name: str, split: str, rows: list[dict]) -> None:
    """The authors' copy of a dataset split: ``<name>/<name>_<split>.json``, JSON lines."""
    _write(datasets / name / f"{name}_{split}.json", "".join(json.dumps(r) + "\n" for r in rows))


def write_palm(datasets: Path, name: str, split: str, outputs: list[str], batch: int = 1000) -> None:
    """PaLM's outputs: ``<name>/llm/<split>_CoT_<i>.json``, a JSON list per batch of ``batch``."""
    for i, start in enumerate(range(0, len(outputs), batch)):
        _write(datasets / name / "llm" / f"{split}_CoT_{i}.json", json.dumps(outputs[start:start + batch]))


def write_gpt_neox(datasets: Path, name: str, split: str, outputs: list[str]) -> None:
    """GPT-NeoX's outputs: ``gpt-neox/<name>/<split>.json``, one JSON list."""
    _write(datasets / "gpt-neox" / name / f"{split}.json", json.dumps(outputs))
