"""The GGUF models already on this Mac (Ollama's store, LM Studio's folder) are listed by
`mlx-distill models` and offered by the TUI's teacher picker, each with its architecture, type,
size, fit and whether it can be used; and the catalog holds the current small families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_distill.catalog import load_catalog
from mlx_distill.teacher import local_gguf_models
from mlx_distill.testing.cli_runner import run_cli
from mlx_distill.testing.gguf_models import write_tiny_gguf
from mlx_distill.tui.model_choices import load_choices
from mlx_distill.tui.run_form import RunForm, check_form


@pytest.fixture
def stores(tmp_path, monkeypatch) -> dict[str, Path]:
    ollama, lmstudio = tmp_path / "ollama", tmp_path / "lmstudio"
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    monkeypatch.setenv("LMSTUDIO_MODELS", str(lmstudio))
    (ollama / "blobs").mkdir(parents=True)
    for name, arch, digest in (("tiny", "qwen3", "ab"), ("old", "gpt2", "cd")):
        if arch == "gpt2":
            write_tiny_gguf(ollama / "blobs" / f"sha256-{digest * 32}", "gpt2", "F16", hidden=32, ffn=32, layers=1)
        else:
            write_tiny_gguf(ollama / "blobs" / f"sha256-{digest * 32}", arch, "Q4_K", head_dim=128)
        manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                    "digest": f"sha256:{digest * 32}"}]}))
    broken = ollama / "manifests" / "registry.ollama.ai" / "library" / "broken" / "1b"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"layers": "nope"}')
    folder = lmstudio / "someone" / "Gemma-GGUF"
    folder.mkdir(parents=True)
    write_tiny_gguf(folder / "gemma.Q8_0.gguf", "gemma3", "Q8_0", layers=6, heads=2, kv_heads=1, head_dim=256,
                    tied=True)
    (folder / "mmproj-gemma.gguf").write_bytes(b"GGUF")  # a vision projector: not a teacher
    return {"ollama": ollama, "lmstudio": lmstudio}


def test_local_models_are_found_with_what_they_are(stores):
    found = {model.name: model for model in local_gguf_models()}
    assert set(found) == {"ollama:tiny:latest", "ollama:old:latest", "ollama:broken:1b",
                          "lmstudio:someone/Gemma-GGUF"}
    tiny = found["ollama:tiny:latest"]
    assert tiny.supported and tiny.architecture == "qwen3" and tiny.quant == "Q4_K" and tiny.weights > 0
    assert found["lmstudio:someone/Gemma-GGUF"].architecture == "gemma3"
    assert not found["ollama:old:latest"].supported and "gpt2" in found["ollama:old:latest"].problem
    assert "no list of layers" in found["ollama:broken:1b"].problem


def test_models_command_lists_them_beside_the_catalog(stores):
    result = run_cli("models", "--kind", "teacher")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()
             if line.strip().startswith(("ollama:", "lmstudio:"))}
    assert "qwen3" in lines["ollama:tiny:latest"] and "Q4_K" in lines["ollama:tiny:latest"]
    assert lines["ollama:tiny:latest"].rstrip().endswith("yes")
    assert "no: GGUF architecture 'gpt2' is not supported" in lines["ollama:old:latest"]
    assert "gemma-3-4b" in result.stdout and "qwen3:8b" in result.stdout  # the catalog, with Ollama names


def test_the_teacher_picker_offers_them_and_refuses_the_unsupported(stores, tmp_path):
    choices = load_choices(available_bytes=10**12, downloaded=lambda _: False)
    local = [c for c in choices if c.name.startswith(("ollama:", "lmstudio:"))]
    assert [c.name for c in local][:2] == ["ollama:broken:1b", "ollama:old:latest"]
    tiny = next(c for c in local if c.name == "ollama:tiny:latest")
    assert tiny.role == "teacher" and tiny.fits and "on this Mac" in tiny.label and "qwen3 Q4_K" in tiny.note
    old = next(c for c in local if c.name == "ollama:old:latest")
    assert "NOT SUPPORTED" in old.label
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    form = RunForm(task="svamp", data_path=str(data), teacher="ollama:old:latest", student="google/flan-t5-small")
    assert any(p.startswith("teacher ollama:old:latest cannot be used") for p in check_form(form, choices))
    good = RunForm(task="svamp", data_path=str(data), teacher="ollama:tiny:latest", student="google/flan-t5-small")
    assert not [p for p in check_form(good, choices) if "teacher" in p]


def test_the_catalog_has_the_current_small_families():
    catalog = load_catalog()
    names = {model.name for model in catalog.teachers}
    assert {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b",
            "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "smollm2-360m", "smollm2-1.7b", "phi-4-mini",
            "mistral-7b"} <= names
    assert all(model.ollama for model in catalog.teachers if model.name.startswith(("qwen3", "gemma-3", "phi-4")))
