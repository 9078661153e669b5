"""Each supported GGUF architecture and tensor type, converted by us and run by mlx-lm, against
transformers' GGUF loader (float32, dequantized by the gguf package) on the same small file written
in llama.cpp's tensor names and layouts: logits within 1e-3 and the same greedy tokens where the
mapping is exact; within a stated tolerance where a type is re-quantized."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_distill.events import Log
from mlx_distill.teacher.gguf import convert_gguf
from mlx_distill.testing.gguf_models import write_tiny_gguf

torch = pytest.importorskip("torch")

PROMPTS = ["hello there", "the other three"]
GREEDY_TOKENS = 6
# Shapes of the real families, scaled down: Qwen3 and Gemma 3 have head_dim != hidden / heads,
# Gemma 3 needs 6 layers for one global layer among sliding ones (window 8 < the prompts).
SHAPES = {
    "llama": {}, "qwen2": {}, "phi3": {},
    "qwen3": {"head_dim": 128},
    "gemma3": {"layers": 6, "heads": 2, "kv_heads": 1, "head_dim": 256, "tied": True},
}
EXACT_CASES = [("llama", "Q4_0"), ("llama", "Q5_1"), ("llama", "Q8_0"), ("llama", "Q4_K"), ("llama", "F16"),
               ("llama", "BF16"), ("qwen2", "Q5_0"), ("qwen3", "Q5_K"),
               ("gemma3", "Q8_0"), ("phi3", "Q4_0")]
# Re-quantized: the largest logit difference as a fraction of the largest logit (measured here on
# these random models: Q6_K -> 8 bits about 1%, Q3_K -> 4 bits about 14%).
REQUANTIZED_CASES = [("llama", "Q6_K", 0.03), ("llama", "Q3_K", 0.3)]


def _convert(tmp_path: Path, arch: str, kind: str) -> tuple[Path, Path, list[str]]:
    gguf = write_tiny_gguf(tmp_path / f"{arch}-{kind}.gguf", arch, kind, **SHAPES[arch])
    logs: list[str] = []
    convert_gguf(gguf, tmp_path / "mlx", lambda event: logs.append(event.message) if isinstance(event, Log) else None)
    return gguf, tmp_path / "mlx", logs


def _models(gguf: Path, folder: Path):
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model, tokenizer = load(str(folder))
    as_cpu_teacher = dequantize_model(load(str(folder))[0])  # as load_teacher runs it on the CPU
    as_cpu_teacher.set_dtype(mx.float32)
    return reference, model, as_cpu_teacher, tokenizer


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _greedy(model, ids: list[int]) -> list[int]:
    from mlx_lm.generate import generate_step

    return [int(token) for token, _ in generate_step(mx.array(ids), model, max_tokens=GREEDY_TOKENS)]


@pytest.mark.parametrize("arch, kind", EXACT_CASES, ids=[f"{a}-{k}" for a, k in EXACT_CASES])
def test_exact_conversion_matches_transformers(tmp_path, arch, kind):
    gguf, folder, logs = _convert(tmp_path, arch, kind)
    assert not any("precision is lost" in line for line in logs)
    reference, model, as_cpu_teacher, tokenizer = _models(gguf, folder)
    for prompt in PROMPTS:
        ids = _prompt_ids(tokenizer, prompt)
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
            greedy = reference.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                                        eos_token_id=None, pad_token_id=0)[0][len(ids):].tolist()
        for candidate in (model, as_cpu_teacher):
            logits = np.array(candidate(mx.array([ids]))[0].astype(mx.float32))
            assert np.abs(logits - expected).max() < 1e-3
        assert _greedy(as_cpu_teacher, ids) == greedy


@pytest.mark.parametrize("arch, kind, tolerance", REQUANTIZED_CASES, ids=[k for _, k, _ in REQUANTIZED_CASES])
def test_requantized_types_are_within_the_stated_tolerance_and_said(tmp_path, arch, kind, tolerance):
    gguf, folder, logs = _convert(tmp_path, arch, kind)
    assert any("precision is lost" in line and kind in line and "blk.0.attn_q.weight" in line for line in logs)
    config = json.loads((folder / "config.json").read_text())
    assert config["mlx_distill_gguf"]["requantized"][kind] > 0
    reference, _, as_cpu_teacher, tokenizer = _models(gguf, folder)
    ids = _prompt_ids(tokenizer, PROMPTS[0])
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    logits = np.array(as_cpu_teacher(mx.array([ids]))[0])
    assert np.abs(logits - expected).max() <= tolerance * np.abs(expected).max()


def test_the_config_is_what_mlx_lm_s_model_file_reads(tmp_path):
    _, folder, _ = _convert(tmp_path, "gemma3", "Q4_0")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["sliding_window"] == 8
    assert config["sliding_window_pattern"] == 6 and config["query_pre_attn_scalar"] == 256
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    assert config["tie_word_embeddings"] is True
