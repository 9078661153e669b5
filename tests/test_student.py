"""Loading, saving, creating and generating with the student, and the errors users see."""

from __future__ import annotations

import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
import time

import httpx2 as httpx  # the HTTP client huggingface_hub uses
import huggingface_hub
import huggingface_hub.constants as hub_constants
import mlx.core as mx
import numpy as np
import pytest
from huggingface_hub.errors import RepositoryNotFoundError
from mlx.utils import tree_flatten
from safetensors.numpy import load_file, save_file

import mlx_distill
from mlx_distill.errors import DistillError
from mlx_distill.student import (
    StudentResponse,
    count_parameters,
    encode_prompts,
    generate,
    generate_batch,
    generate_tokens,
    init_student,
    load_student,
    save_student,
    stream_generate,
)
from mlx_distill.student.detokenize import streaming_detokenizer
from mlx_distill.testing.tiny_t5 import build_tiny_t5
from mlx_distill.testing.t5_reference import CORPUS, PROMPTS, batch, build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny"), "v1.1")


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_student(tiny)


def _logits(model, tokenizer) -> np.ndarray:
    input_ids, mask = batch(tokenizer, PROMPTS)
    decoder_ids = np.tile(np.arange(6, dtype=np.int32), (len(PROMPTS), 1))
    return np.array(model(mx.array(input_ids), mx.array(decoder_ids), mx.array(mask)))


def _copy(tiny, tmp_path):
    return shutil.copytree(tiny, tmp_path / "copy")


# --- building ---------------------------------------------------------------------------------


def test_build_is_quick_and_the_tokenizer_covers_the_corpus(tmp_path):
    corpus = ["how many pens are left", "eight minus three is five", "predict: explain:"] * 5
    build_tiny_t5(tmp_path / "warm-up")  # imports transformers' tokenizer code once
    start = time.perf_counter()
    folder = build_tiny_t5(tmp_path / "demo", corpus=corpus, vocab_size=120, variant="original")
    assert time.perf_counter() - start < 2.0
    _, tokenizer = load_student(folder)
    ids = tokenizer(" ".join(corpus))["input_ids"]
    assert tokenizer.unk_token_id == 2 and 2 not in ids
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
    assert tokenizer.decode(tokenizer("how many pens")["input_ids"], skip_special_tokens=True) == "how many pens"


# --- loading ----------------------------------------------------------------------------------


def test_public_names_are_importable_from_the_package():
    assert mlx_distill.load_student is load_student
    assert mlx_distill.generate is generate and mlx_distill.stream_generate is stream_generate
    assert mlx_distill.save_student is save_student


def test_sharded_safetensors_load_the_same_weights(tiny, loaded, tmp_path):
    folder = _copy(tiny, tmp_path)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    model, tokenizer = load_student(folder)
    np.testing.assert_array_equal(_logits(model, tokenizer), _logits(*loaded))

    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(DistillError, match="model-00002-of-00002.safetensors is missing"):
        load_student(folder)


def test_pytorch_bin_loads_through_torch(tiny, loaded, tmp_path):
    # torch is a test extra, imported only by the test that needs it.
    import torch
    from safetensors.torch import load_file as load_torch_file

    folder = _copy(tiny, tmp_path)
    torch.save(load_torch_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model, tokenizer = load_student(folder)
    np.testing.assert_array_equal(_logits(model, tokenizer), _logits(*loaded))


def test_pytorch_bin_without_torch_says_how_to_convert(tiny, tmp_path, monkeypatch):
    folder = _copy(tiny, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(DistillError, match="torch is not installed.*save_pretrained"):
        load_student(folder)


def test_non_t5_folder_names_the_architecture(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(DistillError, match="LlamaForCausalLM.*not a T5"):
        load_student(folder)


def test_missing_and_corrupt_weights(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(DistillError, match="model.safetensors.*corrupt"):
        load_student(folder)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DistillError, match="corrupt"):
        load_student(folder)
    weights.unlink()
    with pytest.raises(DistillError, match="no weights in"):
        load_student(folder)


def test_weights_that_do_not_fit_the_config(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DistillError, match="do not match its config.json"):
        load_student(folder)


def test_unknown_dtype_and_missing_folder(tiny, tmp_path):
    with pytest.raises(DistillError, match="unknown dtype 'float8'.*bfloat16"):
        load_student(tiny, dtype="float8")
    with pytest.raises(DistillError, match="model folder not found"):
        load_student(tmp_path / "nowhere")
    with pytest.raises(DistillError, match="no config.json"):
        load_student(tmp_path)


def test_hub_id_that_is_offline_and_not_cached(tmp_path, monkeypatch):
    # Real huggingface_hub code path in offline mode, with an empty cache.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DistillError, match="not in the local cache.*HF_HUB_OFFLINE=1"):
        load_student("google/flan-t5-small")


def test_hub_id_that_does_not_exist(monkeypatch):
    # Mocks the Hugging Face hub (no network here).
    def not_found(repo_id, **kwargs):
        url = f"https://huggingface.co/api/models/{repo_id}"
        raise RepositoryNotFoundError("not found", response=httpx.Response(404, request=httpx.Request("GET", url)))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(DistillError, match="no model 'someone/not-a-model' on the Hugging Face hub"):
        load_student("someone/not-a-model")


def test_hub_download_asks_only_for_needed_files(tiny, loaded, monkeypatch):
    # Mocks the Hugging Face hub: the "download" is the tiny folder.
    calls = []

    def fake_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return str(tiny)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model, tokenizer = load_student("google/flan-t5-small")
    np.testing.assert_array_equal(_logits(model, tokenizer), _logits(*loaded))
    [(repo_id, patterns)] = calls
    assert repo_id == "google/flan-t5-small"
    wanted = ["config.json", "model.safetensors", "spiece.model", "tokenizer.json", "model-00001-of-00002.safetensors"]
    unwanted = ["flax_model.msgpack", "tf_model.h5", "pytorch_model.bin", "onnx/decoder_model.onnx", "README.md"]
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in wanted)
    assert not any(fnmatch.fnmatch(f, p) for f in unwanted for p in patterns)


# --- creating and saving ----------------------------------------------------------------------


def test_init_student_is_seeded_and_sized_by_the_tokenizer(loaded):
    _, tokenizer = loaded
    config = {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_heads": 2,
              "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    a, b, c = (init_student(config, tokenizer, seed=s) for s in (0, 0, 1))
    assert a.args.vocab_size == len(tokenizer) and a.args.separate_lm_head
    assert mx.array_equal(a.lm_head.weight, b.lm_head.weight).item()
    assert not mx.array_equal(a.lm_head.weight, c.lm_head.weight).item()
    assert abs(float(a.shared.weight.std()) - 1.0) < 0.1
    assert abs(float(a.encoder.layers[0].mlp.wo.weight.std()) - 32**-0.5) < 0.02
    assert float(a.encoder.final_norm.weight.min()) == 1.0
    assert len(generate(a, tokenizer, PROMPTS[:2], max_tokens=3)) == 2
    with pytest.raises(DistillError, match="smaller than the tokenizer"):
        init_student({**config, "vocab_size": 10}, tokenizer)


def test_save_replaces_an_existing_folder_atomically(loaded, tmp_path):
    model, tokenizer = loaded
    out = tmp_path / "student"
    save_student(model, tokenizer, out)  # an earlier student: replaced (any other folder is refused)
    (out / "stale.txt").write_text("old")
    assert save_student(model, tokenizer, out) == out
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    again, tok = load_student(out)
    np.testing.assert_array_equal(_logits(again, tok), _logits(model, tokenizer))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"] and config["tie_word_embeddings"] is False
    assert json.loads((out / "generation_config.json").read_text())["decoder_start_token_id"] == 0


def test_bfloat16_model_saves_and_reloads(tiny, tmp_path):
    model, tokenizer = load_student(tiny, dtype="bfloat16")
    out = save_student(model, tokenizer, tmp_path / "bf16")
    again, _ = load_student(out, dtype="bfloat16")
    assert again.shared.weight.dtype == mx.bfloat16
    assert mx.array_equal(again.shared.weight, model.shared.weight).item()


# --- generating -------------------------------------------------------------------------------


def test_generate_returns_text_in_prompt_order(loaded):
    model, tokenizer = loaded
    texts = generate(model, tokenizer, PROMPTS, max_tokens=8, batch_size=3)
    tokens = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8)
    assert texts == [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    assert texts[1] == generate(model, tokenizer, [PROMPTS[1]], max_tokens=8)[0]
    assert generate(model, tokenizer, [], max_tokens=8) == []


# Prompts whose answers from the tiny model hold spaces, digits, punctuation and special tokens.
STREAM_PROMPTS = PROMPTS + ["12 + 7 = 19", "a man has 3 apples and buys 5 more", "explain: 8 apples",
                            "the lazy dog ?"]


def test_stream_pieces_add_up_to_the_generated_text(loaded, monkeypatch):
    model, tokenizer = loaded
    expected = generate(model, tokenizer, STREAM_PROMPTS, max_tokens=30)
    joined = "".join(expected)
    assert " " in joined and any(c.isdigit() for c in joined) and {"+", "=", ":"} & set(joined)

    def decode_again(*args, **kwargs):
        raise AssertionError("the stream decoded the whole answer again")

    monkeypatch.setattr(tokenizer, "decode", decode_again)  # each token is detokenized once
    for prompt, text in zip(STREAM_PROMPTS, expected):
        responses = list(stream_generate(model, tokenizer, prompt, max_tokens=30))
        assert all(isinstance(r, StudentResponse) for r in responses)
        assert "".join(r.text for r in responses) == text
        assert [r.finish_reason for r in responses[:-1]] == [None] * (len(responses) - 1)
        assert responses[-1].finish_reason == ("length" if len(responses) == 30 else "stop")
        assert [r.generated_tokens for r in responses] == list(range(1, len(responses) + 1))
        assert responses[-1].tokens_per_second > 0
        assert responses[0].prompt_tokens == len(tokenizer(prompt)["input_ids"])
        assert not responses[0].prompt_truncated


def test_streaming_detokenizer_equals_decode(loaded):
    # T5 decodes with Metaspace: only the first token loses its leading space, even when it is a
    # lone "▁" (mlx-lm's SPM detokenizer alone would also trim the next word then).
    _, tokenizer = loaded
    detokenizer = streaming_detokenizer(tokenizer)
    hidden = set(tokenizer.all_special_ids)
    lone_space = tokenizer.convert_tokens_to_ids("\u2581")
    texts = ["A man has 3 apples, so he has 8 apples.", "12 + 7 = 19 (yes)! what?", "  spaced  out  ",
             "it's \"quoted\"; yes:no"]
    rng = random.Random(0)
    sequences = [tokenizer(t)["input_ids"] for t in texts]
    sequences += [[lone_space, tokenizer.convert_tokens_to_ids("\u2581apples")], [0, lone_space, lone_space, 5]]
    sequences += [[rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 12))] for _ in range(300)]
    for ids in sequences:
        detokenizer.reset()
        pieces = []
        for token in ids:
            if token not in hidden:
                detokenizer.add_token(token)
                pieces.append(detokenizer.last_segment)
        detokenizer.finalize()
        pieces.append(detokenizer.last_segment)
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True), ids


def test_sampling_with_a_tiny_top_p_is_greedy_and_temperature_varies(loaded):
    model, tokenizer = loaded
    greedy = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8)
    assert generate_tokens(model, tokenizer, PROMPTS, max_tokens=8, temperature=1.0, top_p=1e-6) == greedy
    mx.random.seed(0)
    samples = {tuple(generate_tokens(model, tokenizer, [PROMPTS[0]], max_tokens=8, temperature=5.0)[0])
               for _ in range(4)}
    assert len(samples) > 1


def test_generation_ignores_and_keeps_training_mode(tiny):
    model, tokenizer = load_student(tiny)
    expected = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8)
    model.train()
    assert generate_tokens(model, tokenizer, PROMPTS, max_tokens=8) == expected
    assert model.training


def test_bad_generation_arguments(loaded):
    model, tokenizer = loaded
    with pytest.raises(DistillError, match="max_tokens"):
        generate(model, tokenizer, ["x"], max_tokens=0)
    with pytest.raises(DistillError, match="top_p"):
        generate(model, tokenizer, ["x"], top_p=0.0, temperature=1.0)
    with pytest.raises(DistillError, match="beam search with temperature"):
        generate(model, tokenizer, ["x"], num_beams=2, temperature=0.7)


def test_corpus_constant_is_what_the_fixture_uses():
    # Guard: the parity fixtures rely on this corpus covering the prompt words.
    words = {w for line in CORPUS for w in line.split()}
    assert {"fox", "apples", "plate"} <= words


def test_generation_follows_weight_and_dtype_changes(tiny):
    # The compiled decoding step is kept on the model; it must read the current weights.
    model, tokenizer = load_student(tiny)
    before = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8)
    fresh, _ = load_student(tiny)
    for m in (model, fresh):
        m.update({"lm_head": {"weight": m.lm_head.weight[::-1]}})
    after = generate_tokens(model, tokenizer, PROMPTS, max_tokens=8)
    assert after != before
    assert after == generate_tokens(fresh, tokenizer, PROMPTS, max_tokens=8)
    model.set_dtype(mx.bfloat16)
    fresh.set_dtype(mx.bfloat16)
    assert generate_tokens(model, tokenizer, PROMPTS, max_tokens=8) == generate_tokens(
        fresh, tokenizer, PROMPTS, max_tokens=8
    )
    assert model.decoder.layers[0].self_attention.q.weight.dtype == mx.bfloat16


# --- long inputs ------------------------------------------------------------------------------


def test_long_prompts_are_cut_as_training_cuts_them_and_reported(loaded):
    model, tokenizer = loaded
    full = [tokenizer(p)["input_ids"] for p in PROMPTS]
    limit = sorted(len(ids) for ids in full)[1]  # one prompt shorter, one exactly this long
    long_rows = [i for i, ids in enumerate(full) if len(ids) > limit]
    assert 0 < len(long_rows) <= len(PROMPTS) - 2
    ids, truncated = encode_prompts(tokenizer, PROMPTS, max_input_tokens=limit)
    assert truncated == long_rows
    assert ids == tokenizer(PROMPTS, truncation=True, max_length=limit)["input_ids"]
    assert [len(row) for row in ids] == [min(len(row), limit) for row in full]

    reports = []
    tokens = generate_tokens(model, tokenizer, PROMPTS, max_tokens=6, max_input_tokens=limit,
                             on_truncated=reports.append)
    assert reports == [long_rows]
    cut_row = long_rows[0]
    one = np.array([ids[cut_row]], dtype=np.int32)
    assert tokens[cut_row] == generate_batch(model, one, np.ones_like(one), max_tokens=6)[0]
    responses = list(stream_generate(model, tokenizer, PROMPTS[cut_row], max_tokens=3, max_input_tokens=limit))
    assert all(r.prompt_truncated and r.prompt_tokens == limit for r in responses)


def test_a_huge_prompt_is_cut_before_it_is_tokenized(loaded):
    # A 5 MB question takes T5's tokenizer ~10 s and the encoder far more memory than it has.
    model, tokenizer = loaded
    huge = "how many apples are left " * 200_000
    start = time.perf_counter()
    responses = list(stream_generate(model, tokenizer, huge, max_tokens=4))
    assert time.perf_counter() - start < 2.0
    assert responses[0].prompt_truncated and responses[0].prompt_tokens == 512
    [ids], truncated = encode_prompts(tokenizer, [huge], 16)
    assert truncated == [0] and ids == tokenizer(huge[:1000], truncation=True, max_length=16)["input_ids"]


def test_a_dense_prompt_keeps_the_text_past_the_character_cut(loaded):
    # Runs of spaces tokenize to nothing: the character cut alone would drop the last words.
    _, tokenizer = loaded
    prompt = "apples" + " " * 2000 + "plate fox"
    expected = tokenizer(prompt)["input_ids"]
    assert len(expected) * 32 < 2000  # the prompt is longer than the character cut for this limit
    assert encode_prompts(tokenizer, [prompt], len(expected)) == ([expected], [])


def test_bad_max_input_tokens(loaded):
    model, tokenizer = loaded
    with pytest.raises(DistillError, match="max_input_tokens must be at least 1, got 0"):
        generate(model, tokenizer, ["x"], max_input_tokens=0)


def test_count_parameters_counts_every_weight_once(loaded, tiny):
    model, _ = loaded
    assert count_parameters(model) == sum(v.size for _, v in tree_flatten(model.parameters()))
    original, _ = load_student(build(tiny.parent / "original", "original"))
    assert count_parameters(original) == sum(v.size for _, v in tree_flatten(original.parameters()))
    assert count_parameters(original) < count_parameters(model)  # tied head: no lm_head


def test_students_load_from_several_threads_at_once(demo_models):
    """Two servers (or a server and the TUI) load together: in a fresh process, where transformers is
    not imported yet and its lazy module used to fail one of the threads."""
    # Threads started as the servers start theirs (MLX threads must free their streams before exit).
    script = ("import sys\n"
              "from mlx_distill.mlx_thread import start_mlx_thread\n"
              "from mlx_distill.student import load_student\n"
              "errors = []\n"
              "def load():\n"
              "    try:\n"
              "        load_student(sys.argv[1])\n"
              "    except Exception as error:\n"
              "        errors.append(repr(error))\n"
              "threads = [start_mlx_thread(load, 'loader') for _ in range(4)]\n"
              "[t.join() for t in threads]\n"
              "print(errors)\n")
    result = subprocess.run([sys.executable, "-c", script, str(demo_models["student"])], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
