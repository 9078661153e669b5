"""A small synthetic classification task with rationales, and a tiny T5 whose tokenizer knows it.

Input: a sentence that mentions one thing; label: its kind (animal / fruit / tool / color);
rationale: "<thing> is a kind of <kind>.". Validation and test use sentence frames never seen
in training, so a model must learn the thing -> kind mapping, not the sentence. Chance is 25%.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mlx_distill.testing.tiny_t5 import build_tiny_t5

KINDS = {
    "animal": ["cat", "dog", "horse", "sheep", "tiger", "mouse"],
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango"],
    "tool": ["hammer", "saw", "wrench", "drill", "shovel", "chisel"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange"],
}
TRAIN_FRAMES = [
    "I found a {} today.",
    "There is a {} near the house.",
    "My friend likes the {}.",
    "We talked about a {} all day.",
    "Look at that {} over there.",
    "The picture shows a {}.",
    "A {} is in the box.",
    "She drew a {} on the wall.",
    "He asked for the {} again.",
    "Our class learned about the {}.",
    "The old {} was in the garden.",
    "They painted a {} for the show.",
]
HELD_OUT_FRAMES = ["Yesterday a {} was on the table.", "Can you find the {} please?"]


def _rows(frames: list[str], count: int, rng: random.Random, prefix: str) -> list[dict]:
    rows = []
    pairs = [(kind, word) for kind, words in KINDS.items() for word in words]
    for i in range(count):
        kind, word = rng.choice(pairs)
        rows.append(
            {
                "id": f"{prefix}-{i}",
                "input": rng.choice(frames).format(word),
                "label": kind,
                "rationale": f"{word} is a kind of {kind}.",
            }
        )
    return rows


def write_task(folder: Path, train: int = 240, validation: int = 48, test: int = 48, seed: int = 0) -> Path:
    """Write train/validation/test JSONL files for ``load_task("jsonl", folder)``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames, count in (
        ("train", TRAIN_FRAMES, train),
        ("validation", HELD_OUT_FRAMES, validation),
        ("test", HELD_OUT_FRAMES, test),
    ):
        with (folder / f"{name}.jsonl").open("w") as handle:
            for row in _rows(frames, count, rng, name):
                handle.write(json.dumps(row) + "\n")
    return folder


def corpus() -> list[str]:
    words = [w for ws in KINDS.values() for w in ws]
    lines = [f.format(w) for f in TRAIN_FRAMES + HELD_OUT_FRAMES for w in words]
    lines += [f"{w} is a kind of {k}. So the answer is {k}" for k, ws in KINDS.items() for w in ws]
    lines += ["predict: explain:", "animal fruit tool color"]
    return lines


def build_model(folder: Path, **overrides) -> Path:
    settings = dict(vocab_size=160, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, dropout_rate=0.1)
    settings.update(overrides)
    return build_tiny_t5(folder, corpus=corpus(), **settings)
