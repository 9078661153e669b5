"""Hostile GGUF inputs: odd header fields, broken Ollama manifests and model names that lead out of
the Ollama / LM Studio folders are each one line, never a traceback or a file outside them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mlx_distill.errors import DistillError
from mlx_distill.teacher import check_gguf, resolve_gguf
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli
from mlx_distill.testing.gguf_models import write_tiny_gguf

REPO = Path(__file__).resolve().parents[1]


def _header(kv: bytes, kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, kv_count) + kv


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def _check_one_line(path: Path, *words: str) -> None:
    with pytest.raises(DistillError) as error:
        check_gguf(str(path))
    assert "\n" not in str(error.value)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("value, shown", [
    (struct.pack("<II", 4, 0), "is 0"),  # uint32 0
    (struct.pack("<IIQ", 9, 4, 2) + struct.pack("<II", 32, 32), "an array of 2"),  # array of two uint32
    (struct.pack("<Ii", 5, -32), "is -32"),
    (struct.pack("<II", 4, 48), "is 48"),
])
def test_a_bad_alignment_is_one_line(tmp_path, value, shown):
    path = tmp_path / "a.gguf"
    path.write_bytes(_header(_key("general.alignment") + value, 1))
    _check_one_line(path, "general.alignment", shown, "download the file again")


def test_a_string_length_of_2_63_is_one_line_without_allocating_it(tmp_path):
    path = tmp_path / "s.gguf"
    path.write_bytes(_header(_key("general.name") + struct.pack("<IQ", 8, 2**63) + b"abc", 1))
    _check_one_line(path, "truncated")
    key_too_long = tmp_path / "k.gguf"
    key_too_long.write_bytes(_header(struct.pack("<Q", 2**63), 1))
    _check_one_line(key_too_long, "truncated")
    array_too_long = tmp_path / "arr.gguf"
    array_too_long.write_bytes(_header(_key("x") + struct.pack("<IIQ", 9, 4, 2**61), 1))
    _check_one_line(array_too_long, "truncated")


def _ollama(tmp_path: Path, monkeypatch, manifest: object) -> Path:
    models = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    path = models / "manifests" / "registry.ollama.ai" / "library" / "m" / "latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    (models / "blobs").mkdir()
    return models


@pytest.mark.parametrize("manifest", [
    {"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": 12345}]},
    {"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": None}]},
    {"layers": "application/vnd.ollama.image.model"},
    {"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../../../etc/passwd"}]},
    {"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "../../../../etc/passwd"}]},
    ["not", "an", "object"],
])
def test_a_broken_ollama_manifest_is_one_line(tmp_path, monkeypatch, manifest):
    _ollama(tmp_path, monkeypatch, manifest)
    with pytest.raises(DistillError) as error:
        resolve_gguf("ollama:m")
    assert "\n" not in str(error.value) and "ollama pull m" in str(error.value)


def test_a_broken_manifest_through_the_cli_is_one_line(tmp_path, monkeypatch):
    _ollama(tmp_path, monkeypatch, {"layers": "x"})
    assert_one_line_error(run_cli("generate", "--task", "jsonl", "--data", REPO / "examples" / "demo", "--teacher",
                                  "ollama:m", "--out", tmp_path / "r.jsonl"), "no list of layers")


def test_ollama_names_cannot_leave_the_manifests_folder(tmp_path, monkeypatch):
    models = _ollama(tmp_path, monkeypatch, {"layers": []})
    # A GGUF file outside the store, where ../ would lead: it must not be reached.
    outside = tmp_path / "outside" / "latest"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                               "digest": "sha256:" + "ab" * 32}]}))
    write_tiny_gguf(models / "blobs" / ("sha256-" + "ab" * 32), "llama", "F16", hidden=32, ffn=32, layers=1)
    for name in ("../../../../outside", "../../../outside:latest", "library/../../../../outside"):
        with pytest.raises(DistillError, match="leads outside"):
            resolve_gguf(f"ollama:{name}")


def test_a_symlinked_blob_leading_out_is_refused(tmp_path, monkeypatch):
    digest = "cd" * 32
    models = _ollama(tmp_path, monkeypatch, {"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                         "digest": f"sha256:{digest}"}]})
    target = write_tiny_gguf(tmp_path / "elsewhere.gguf", "llama", "F16", hidden=32, ffn=32, layers=1)
    (models / "blobs" / f"sha256-{digest}").symlink_to(target)
    with pytest.raises(DistillError, match="leads outside"):
        resolve_gguf("ollama:m")


def test_lmstudio_names_cannot_leave_its_folder(tmp_path, monkeypatch):
    root = tmp_path / "lmstudio"
    (root / "pub" / "model").mkdir(parents=True)
    monkeypatch.setenv("LMSTUDIO_MODELS", str(root))
    write_tiny_gguf(tmp_path / "secret.gguf", "llama", "F16", hidden=32, ffn=32, layers=1)
    for name in ("../secret.gguf", "pub/../../secret.gguf", "pub/model/../../../secret.gguf"):
        with pytest.raises(DistillError, match="leads outside"):
            resolve_gguf(f"lmstudio:{name}")
    inside = write_tiny_gguf(root / "pub" / "model" / "m.gguf", "llama", "F16", hidden=32, ffn=32, layers=1)
    assert resolve_gguf("lmstudio:pub/model") == inside.resolve()
