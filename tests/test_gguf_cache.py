"""The converted-GGUF cache: found again without reading the whole file (size, mtime, header), the
full SHA-256 computed once during the conversion, and a damaged or partial entry converted again."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from mlx_distill.events import Log
from mlx_distill.teacher import gguf_teacher_folder
from mlx_distill.teacher.gguf import read_gguf_header
from mlx_distill.teacher.gguf.cache import cache_key
from mlx_distill.testing.gguf_models import write_tiny_gguf


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _folder(gguf, logs):
    return gguf_teacher_folder(str(gguf), lambda e: logs.append(e.message) if isinstance(e, Log) else None)


def test_the_key_reads_the_header_not_the_weights(tmp_path):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", "llama", "Q8_0")
    header = read_gguf_header(gguf)
    before = cache_key(header)
    stat = gguf.stat()
    data = bytearray(gguf.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor: same size, same header
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(header) == before
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new download: a new key
    assert cache_key(header) != before


def test_converted_once_with_the_full_hash_recorded(tmp_path, cache):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", "llama", "Q4_0")
    logs: list[str] = []
    folder = _folder(gguf, logs)
    config = json.loads((folder / "config.json").read_text())
    assert config["mlx_distill_gguf"]["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert any(line.startswith("converting") for line in logs)
    logs.clear()
    assert _folder(gguf, logs) == folder and logs == []


@pytest.mark.parametrize("damage", ["truncate a shard", "delete the config", "delete a shard"])
def test_a_damaged_entry_is_converted_again(tmp_path, cache, damage):
    gguf = write_tiny_gguf(tmp_path / "m.gguf", "llama", "Q4_0")
    folder = _folder(gguf, [])
    shard = folder / "model.safetensors"
    whole = shard.read_bytes()
    if damage == "truncate a shard":
        shard.write_bytes(whole[: len(whole) // 2])
    elif damage == "delete the config":
        (folder / "config.json").unlink()
    else:
        shard.unlink()
    logs: list[str] = []
    assert _folder(gguf, logs) == folder
    assert any("is damaged" in line and "converting again" in line for line in logs), logs
    assert shard.read_bytes() == whole and (folder / "config.json").is_file()
