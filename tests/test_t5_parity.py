"""The MLX T5 against transformers' PyTorch T5 on the same tiny checkpoints (original and v1.1)."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from mlx_distill.student import ModelArgs, generate_batch, generate_tokens, load_student, save_student
from mlx_distill.student.t5 import RelativePositionBias
from mlx_distill.testing.t5_reference import PROMPTS, VARIANTS, batch, build, torch_generate, torch_model


@pytest.fixture(scope="module", params=list(VARIANTS))
def checkpoint(request, tmp_path_factory):
    folder = build(tmp_path_factory.mktemp(request.param.replace(".", "")), request.param)
    model, tokenizer = load_student(folder)
    reference, info = torch_model(folder)
    return folder, model, tokenizer, reference, info


def _torch_logits(reference, input_ids, mask, decoder_ids) -> np.ndarray:
    with torch.no_grad():
        return reference(input_ids=torch.tensor(input_ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long),
                         decoder_input_ids=torch.tensor(decoder_ids, dtype=torch.long)).logits.numpy()


def _decoder_ids(rows: int, length: int = 9) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 40, size=(rows, length)).astype(np.int32)
    ids[:, 0] = 0
    return ids


def test_checkpoint_has_the_hub_layout(checkpoint):
    folder, model, _, _, info = checkpoint
    config = json.loads((folder / "config.json").read_text())
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    if config["feed_forward_proj"] == "relu":
        assert "tie_word_embeddings" not in config  # as t5-small: tied and scaled by default
        assert not model.args.separate_lm_head and model.args.scale_decoder_outputs
    else:
        assert config["tie_word_embeddings"] is False
        assert model.args.separate_lm_head and not model.args.scale_decoder_outputs
    assert model.args.d_kv * model.args.num_heads != model.args.d_model
    assert model.args.num_layers != model.args.num_decoder_layers


def test_logits_on_a_padded_batch_match_transformers(checkpoint):
    _, model, tokenizer, reference, _ = checkpoint
    input_ids, mask = batch(tokenizer, PROMPTS)
    assert len(set(mask.sum(1))) > 1 and input_ids.shape[1] > 13  # padding, and past max distance
    decoder_ids = _decoder_ids(len(PROMPTS))
    expected = _torch_logits(reference, input_ids, mask, decoder_ids)
    ours = np.array(model(mx.array(input_ids), mx.array(decoder_ids), mx.array(mask)))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_greedy_and_beam_outputs_equal_transformers(checkpoint):
    _, model, tokenizer, reference, _ = checkpoint
    input_ids, mask = batch(tokenizer, PROMPTS)
    greedy = generate_batch(model, input_ids, mask, max_tokens=12)
    assert greedy == torch_generate(reference, input_ids, mask, max_new_tokens=12)
    beams = generate_batch(model, input_ids, mask, max_tokens=12, num_beams=3)
    assert beams == torch_generate(reference, input_ids, mask, max_new_tokens=12, num_beams=3)


def test_padded_batch_gives_each_rows_unbatched_result(checkpoint):
    _, model, tokenizer, _, _ = checkpoint
    batched = generate_tokens(model, tokenizer, PROMPTS, max_tokens=10, batch_size=len(PROMPTS))
    alone = [generate_tokens(model, tokenizer, [p], max_tokens=10)[0] for p in PROMPTS]
    assert batched == alone
    beams = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8, num_beams=2)
    assert beams == [generate_tokens(model, tokenizer, [p], max_tokens=8, num_beams=2)[0] for p in PROMPTS]


@pytest.mark.parametrize("max_length", [None, 12])
def test_cached_decoding_equals_full_recompute(checkpoint, max_length):
    _, model, tokenizer, _, _ = checkpoint
    input_ids, mask = (mx.array(a) for a in batch(tokenizer, PROMPTS))
    decoder_ids = mx.array(_decoder_ids(len(PROMPTS)))
    encoder_hidden = model.encode(input_ids, mask)
    full = model.decode(decoder_ids, encoder_hidden, mask)
    cache = model.make_cache(max_length)
    # A two-token first chunk, then one token at a time.
    steps = [model.decode(decoder_ids[:, :2], encoder_hidden, mask, cache)]
    for t in range(2, decoder_ids.shape[1]):
        steps.append(model.decode(decoder_ids[:, t : t + 1], None, mask, cache))
    incremental = mx.concatenate(steps, axis=1)
    np.testing.assert_allclose(np.array(incremental), np.array(full), atol=1e-4, rtol=1e-4)


def test_save_loads_in_transformers_with_the_same_logits(checkpoint, tmp_path):
    _, model, tokenizer, _, _ = checkpoint
    out = save_student(model, tokenizer, tmp_path / "export")
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    reloaded, info = T5ForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    input_ids, mask = batch(tokenizer, PROMPTS)
    decoder_ids = _decoder_ids(len(PROMPTS))
    ours = np.array(model(mx.array(input_ids), mx.array(decoder_ids), mx.array(mask)))
    np.testing.assert_allclose(_torch_logits(reloaded.eval(), input_ids, mask, decoder_ids), ours, atol=1e-4, rtol=1e-4)
    again, _ = load_student(out)
    np.testing.assert_array_equal(np.array(again(mx.array(input_ids), mx.array(decoder_ids), mx.array(mask))), ours)


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "gelu"])  # tanh gelu vs exact gelu
def test_transformers5_saved_checkpoint_is_read_as_tied_and_unscaled(tmp_path, feed_forward_proj):
    """transformers 5 saves a from-scratch v1.1 with tie_word_embeddings=True, scale_decoder_outputs=False
    and no lm_head tensor; reading tie_word_embeddings alone would wrongly scale the output."""
    folder = build(tmp_path / "tiny", "v1.1")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2,
                      feed_forward_proj=feed_forward_proj, tie_word_embeddings=False, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "v5")
    tokenizer.save_pretrained(tmp_path / "v5")
    saved = json.loads((tmp_path / "v5" / "config.json").read_text())
    assert saved["tie_word_embeddings"] is True and saved["scale_decoder_outputs"] is False
    model, _ = load_student(tmp_path / "v5")
    assert not model.args.separate_lm_head and not model.args.scale_decoder_outputs
    reference, _ = torch_model(tmp_path / "v5")
    input_ids, mask = batch(tokenizer, PROMPTS)
    decoder_ids = _decoder_ids(len(PROMPTS))
    ours = np.array(model(mx.array(input_ids), mx.array(decoder_ids), mx.array(mask)))
    np.testing.assert_allclose(ours, _torch_logits(reference, input_ids, mask, decoder_ids), atol=1e-4, rtol=1e-4)
    # Export keeps it readable by v4 and v5: tied but unscaled is written with an explicit head.
    out = save_student(model, tokenizer, tmp_path / "export")
    reloaded, info = T5ForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    np.testing.assert_allclose(_torch_logits(reloaded.eval(), input_ids, mask, decoder_ids), ours, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_forward_is_close_to_float32(tmp_path, dtype):
    folder = build(tmp_path / "tiny", "v1.1")
    full, tokenizer = load_student(folder)
    half, _ = load_student(folder, dtype=dtype)
    assert half.shared.weight.dtype == getattr(mx, dtype)
    input_ids, mask = (mx.array(a) for a in batch(tokenizer, PROMPTS))
    decoder_ids = mx.array(_decoder_ids(len(PROMPTS)))
    expected = np.array(full(input_ids, decoder_ids, mask))
    got = np.array(half(input_ids, decoder_ids, mask))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    assert len(generate_tokens(half, tokenizer, PROMPTS[:2], max_tokens=4)) == 2


def _loss(model, input_ids, mask, decoder_ids, labels, label_mask):
    logits = model(input_ids, decoder_ids, mask)
    losses = nn.losses.cross_entropy(logits, labels, reduction="none")
    return (losses * label_mask).sum() / label_mask.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_training_mode_dropout_and_compiled_overfit(tmp_path, seed):
    mx.random.seed(seed)
    folder = build(tmp_path / "tiny", "v1.1", dropout_rate=0.2)
    model, tokenizer = load_student(folder)
    input_ids, mask = (mx.array(a) for a in batch(tokenizer, PROMPTS))
    targets, target_mask = (mx.array(a) for a in batch(tokenizer, ["fox", "8", "19", "cupboard"]))
    decoder_ids = mx.concatenate([mx.zeros((len(PROMPTS), 1), dtype=mx.int32), targets[:, :-1]], axis=1)

    eval_a = model(input_ids, decoder_ids, mask)
    assert mx.array_equal(eval_a, model(input_ids, decoder_ids, mask)).item()
    model.train()
    train_a, train_b = model(input_ids, decoder_ids, mask), model(input_ids, decoder_ids, mask)
    assert not mx.array_equal(train_a, train_b).item()  # dropout is on

    loss_and_grad = nn.value_and_grad(model, _loss)
    _, grads = loss_and_grad(model, input_ids, mask, decoder_ids, targets, target_mask)
    zero = [name for name, g in tree_flatten(grads) if not mx.any(g != 0).item()]
    assert zero == []  # every parameter gets a gradient (shared, head, both stacks, bias tables)

    optimizer = optim.Adam(learning_rate=3e-3)
    state = [model.state, optimizer.state, mx.random.state]

    @mx.compile
    def step(input_ids, mask, decoder_ids, targets, target_mask):
        loss, grads = loss_and_grad(model, input_ids, mask, decoder_ids, targets, target_mask)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    losses = []
    for _ in range(150):
        losses.append(step(input_ids, mask, decoder_ids, targets, target_mask).item())
        mx.eval(state)
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    assert generate_tokens(model, tokenizer, PROMPTS, max_tokens=12) == [
        list(row[: int(m.sum()) - 1]) for row, m in zip(np.array(targets), np.array(target_mask))
    ]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (32, 12), (16, 64), (64, 256)])
def test_relative_position_buckets_match_transformers(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-3 * max_distance, 3 * max_distance + 1)
    expected = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance).numpy()
    args = ModelArgs(relative_attention_num_buckets=num_buckets, relative_attention_max_distance=max_distance,
                     num_heads=num_buckets)
    bias = RelativePositionBias(args, bidirectional)
    bias.embeddings.weight = mx.eye(num_buckets)  # bias row = one-hot of the bucket
    queries = mx.array([3 * max_distance])
    keys = mx.arange(6 * max_distance + 1)
    got = np.array(mx.argmax(bias(queries, keys)[0, :, 0, :], axis=0))
    # With max_distance below the exact range (32 buckets, 12) transformers gives negative,
    # unusable buckets for far causal positions; compare where it is defined.
    valid = expected >= 0
    assert valid.sum() > len(expected) // 2
    np.testing.assert_array_equal(got[valid], expected[valid])
