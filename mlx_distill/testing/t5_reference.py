"""Tiny T5 checkpoints in the real hub format, and the same weights in transformers' PyTorch T5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_distill.testing.tiny_t5 import build_tiny_t5

CORPUS = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a man has 3 apples and buys 5 more so he has 8 apples",
    "predict: what is 12 plus 7? explain: 12 + 7 = 19",
    "where would you put a plate after washing it? in the cupboard",
    "entailment neutral contradiction yes no answer question choice",
] * 4

PROMPTS = [
    "the quick brown fox jumps over the lazy dog near the river bank and the man has apples",
    "a man has 3 apples",
    "predict: what is 12 plus 7?",
    "where would you put a plate",
]

# Two variants as the hub stores them. "original" gets a short max distance so that the
# prompts reach past it (buckets saturate there).
VARIANTS = {
    "v1.1": dict(variant="v1.1"),
    "original": dict(variant="original", relative_attention_max_distance=12),
}


def build(folder: Path, name: str, **overrides) -> Path:
    return build_tiny_t5(folder, corpus=CORPUS, **{**VARIANTS[name], **overrides})


def torch_model(folder: Path):
    """transformers' T5 on the same checkpoint, and its loading info."""
    from transformers import T5ForConditionalGeneration  # loads torch: only for reference checks

    model, info = T5ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    return model.eval(), info


def batch(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def torch_generate(model, input_ids, mask, **kwargs) -> list[list[int]]:
    """transformers' generated ids per row, without the start token and cut before EOS.

    use_cache=False: transformers 5 sizes its decoder cache by num_layers, which breaks when
    num_decoder_layers differs (as in these checkpoints).
    """
    import torch  # a test extra: only reference checks need it

    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(input_ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long),
                             do_sample=False, use_cache=False, **kwargs)
    eos = model.config.eos_token_id
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(eos)] if eos in row else row)
    return rows
