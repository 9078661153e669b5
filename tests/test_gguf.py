"""GGUF teachers: bad files refused in one line (tiny files written here), Ollama / LM Studio names
resolved, and nothing half-written left in the cache."""

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter

from mlx_distill.teacher import check_gguf, gguf_teacher_folder, is_gguf_source, resolve_gguf
from mlx_distill.teacher.gguf import unpermute_rows as _unpermute_rows
from tests.test_bad_inputs import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]


def _write_gguf(path: Path, arch: str = "llama", tensors: dict | None = None, raw_type=None) -> Path:
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    for name, array in (tensors or {"token_embd.weight": np.ones((16, 8), np.float32)}).items():
        writer.add_tensor(name, array, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MLX_DISTILL_CACHE", str(root))
    return root


def _generate(teacher: str | Path, tmp_path: Path):
    return run_cli("generate", "--task", "jsonl", "--data", REPO / "examples" / "demo", "--teacher", teacher,
                   "--out", tmp_path / "r.jsonl", "--limit", "2", "--quiet")


def test_truncated_gguf_is_one_line_naming_the_download(tmp_path, cache):
    whole = _write_gguf(tmp_path / "m.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:-100])
    assert_one_line_error(_generate(cut, tmp_path), str(cut), "truncated", "download the file again")
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(whole.read_bytes()[:40])
    assert_one_line_error(_generate(header_only, tmp_path), "truncated", "header")
    assert not (tmp_path / "r.jsonl").exists() and not cache.exists()


def test_unsupported_architecture_and_tensor_type_name_what_would_work(tmp_path, cache):
    gpt2 = _write_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    assert_one_line_error(_generate(gpt2, tmp_path), "architecture 'gpt2' is not supported", "llama, qwen2")
    # 256 weights of Q8_K (llama.cpp's intermediate type, which the gguf package cannot read): one block.
    q8k = _write_gguf(tmp_path / "q8k.gguf", tensors={"token_embd.weight": np.zeros((1, 292), np.uint8)},
                      raw_type=GGMLQuantizationType.Q8_K)
    assert_one_line_error(_generate(q8k, tmp_path), "tensor type Q8_K cannot be read", "Q4_K_M")
    assert not cache.exists()


def test_a_stray_tensor_is_refused_before_any_work(tmp_path, cache):
    odd = _write_gguf(tmp_path / "odd.gguf", tensors={"token_embd.weight": np.ones((16, 8), np.float32),
                                                      "mystery.weight": np.ones((8,), np.float32)})
    assert_one_line_error(_generate(odd, tmp_path), "mystery.weight", "plain Llama")
    assert not cache.exists()


def test_a_file_that_fails_conversion_leaves_nothing_in_the_cache(tmp_path, cache):
    # No llama.attention.layer_norm_rms_epsilon: found missing half-way through the conversion.
    writer = GGUFWriter(str(tmp_path / "bare.gguf"), "llama")
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_one_line_error(_generate(tmp_path / "bare.gguf", tmp_path), "metadata", "is missing")
    leftovers = [p.name for p in (cache / "gguf").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_ollama_names_resolve_through_the_manifest(tmp_path, monkeypatch, cache):
    models = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    assert_one_line_error(_generate("ollama:smollm2:135m", tmp_path), "Ollama model 'smollm2:135m' is not pulled",
                          "ollama pull smollm2:135m")
    blob = _write_gguf(tmp_path / "blob.gguf")
    digest = "ab" * 32
    (models / "blobs").mkdir(parents=True)
    blob.rename(models / "blobs" / f"sha256-{digest}")
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "cd" * 32},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}]}))
    assert is_gguf_source("ollama:smollm2:135m")
    assert resolve_gguf("ollama:smollm2:135m") == models / "blobs" / f"sha256-{digest}"
    assert check_gguf("ollama:smollm2:135m").architecture == "llama"
    # The default tag is "latest", which is not pulled here.
    assert_one_line_error(_generate("ollama:smollm2", tmp_path), "not pulled", "latest")


def test_lmstudio_names_resolve_under_its_models_folder(tmp_path, monkeypatch, cache):
    root = tmp_path / "lmstudio"
    monkeypatch.setenv("LMSTUDIO_MODELS", str(root))
    assert_one_line_error(_generate("lmstudio:HuggingFaceTB/SmolLM2", tmp_path), "LM Studio model",
                          "does not exist")
    folder = root / "HuggingFaceTB" / "SmolLM2"
    folder.mkdir(parents=True)
    one = _write_gguf(folder / "a.Q4_1.gguf")
    assert resolve_gguf("lmstudio:HuggingFaceTB/SmolLM2") == one
    _write_gguf(folder / "b.Q8_0.gguf")
    assert_one_line_error(_generate("lmstudio:HuggingFaceTB/SmolLM2", tmp_path), "a.Q4_1.gguf, b.Q8_0.gguf",
                          "name one file")
    assert resolve_gguf("lmstudio:HuggingFaceTB/SmolLM2/b.Q8_0.gguf") == folder / "b.Q8_0.gguf"


def test_missing_gguf_file_is_one_line(tmp_path, cache):
    assert_one_line_error(_generate(tmp_path / "nope.gguf", tmp_path), "GGUF file not found", "nope.gguf")
    with pytest.raises(Exception, match="not found"):
        gguf_teacher_folder(str(tmp_path / "nope.gguf"))


def test_unpermute_undoes_llama_cpp_row_order():
    import mlx.core as mx

    heads, head_dim, width = 3, 4, 5
    hf = np.arange(heads * head_dim * width, dtype=np.float32).reshape(heads * head_dim, width)
    # llama.cpp's order: within each head, rows (0, 2, 1, 3) of the two rope halves interleaved.
    gguf = hf.reshape(heads, 2, head_dim // 2, width).swapaxes(1, 2).reshape(hf.shape)
    assert not np.array_equal(gguf, hf)
    assert np.array_equal(np.array(_unpermute_rows(mx.array(gguf), heads)), hf)
