"""A GGUF file -> an mlx-lm model folder (config.json, safetensors shards, tokenizer), tensor by tensor.

Each tensor is read from the file on its own (``os.pread``: the file is never loaded whole nor
mapped, so the pages already converted do not stay resident), converted (``quants``), renamed and
un-permuted for the architecture (``architectures``) and added to the shard being filled; a full
shard is written and dropped. The peak is about one shard plus one tensor's intermediates,
whatever the model's size (``benchmarks/gguf_convert.py`` measures it).

The tokenizer and chat template come from the GGUF's own metadata through transformers' GGUF
reader (the ``gguf`` package).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event
from mlx_distill.files import write_json_atomic
from mlx_distill.teacher.gguf.architectures import float_change, hf_stem, is_extra, is_vision, model_config, row_change
from mlx_distill.teacher.gguf.header import GGUFHeader, GGUFTensor, check_gguf_header, read_gguf_header
from mlx_distill.teacher.gguf.quants import GROUP_SIZE, ConvertedTensor, convert_tensor

# Bumped when the converter's output changes, so old cache folders are not reused.
CONVERTER_VERSION = 2
SHARD_BYTES = 256 * 1024**2
# Names of the shards while they are written (their count is known only at the end).
_PARTIAL_SHARD = "model-part-{:05d}.safetensors"


def _meta_reader(header: GGUFHeader):
    def meta(key: str, default):
        value = header.metadata.get(f"{header.architecture}.{key}", default)
        if value is None:
            raise DistillError(f"{header.path}: GGUF metadata {header.architecture}.{key} is missing; "
                               "the file is incomplete or not a language model")
        return value
    return meta


def _read_tensor(handle, header: GGUFHeader, tensor: GGUFTensor) -> np.ndarray:
    """The tensor's bytes as (rows, bytes per row) uint8, read on their own."""
    data = os.pread(handle.fileno(), tensor.nbytes, header.data_offset + tensor.offset)
    if len(data) != tensor.nbytes:
        raise DistillError(f"{header.path} is truncated inside tensor {tensor.name}; download the file again")
    raw = np.frombuffer(data, np.uint8)
    rows = 1
    for dim in tensor.shape[1:]:
        rows *= dim
    return raw.reshape(rows, -1)


def _numpy_shape(tensor: GGUFTensor) -> tuple[int, ...]:
    return tuple(reversed(tensor.shape))


class _ShardWriter:
    """Fills shards of about SHARD_BYTES; writes each when full and lets it go."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.current: dict[str, mx.array] = {}
        self.size = 0
        self.written: list[Path] = []

    def add(self, name: str, array: mx.array) -> None:
        self.current[name] = array
        self.size += array.nbytes
        if self.size >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.current:
            return
        path = self.folder / _PARTIAL_SHARD.format(len(self.written) + 1)
        mx.save_safetensors(str(path), self.current, metadata={"format": "mlx"})
        self.written.append(path)
        self.current, self.size = {}, 0

    def finish(self) -> list[Path]:
        self.flush()
        count = len(self.written)
        final = []
        for index, path in enumerate(self.written, start=1):
            name = "model.safetensors" if count == 1 else f"model-{index:05d}-of-{count:05d}.safetensors"
            path.rename(self.folder / name)
            final.append(self.folder / name)
        return final


def _precision_note(lost: dict[str, list[str]], bits: dict[str, int]) -> str:
    parts = []
    for kind, names in sorted(lost.items()):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{len(names)} {kind} tensors ({shown}) re-quantized to {bits[kind]}-bit group {GROUP_SIZE}")
    return "not exact in MLX, so precision is lost: " + "; ".join(parts)


def convert_gguf(gguf_path: str | Path, folder: str | Path, on_event: OnEvent = ignore_event, *,
                 scale_dtype: mx.Dtype = mx.float32, source_sha256: str = "") -> dict:
    """Write ``gguf_path`` as an mlx-lm model folder ``folder`` (config.json, safetensors, tokenizer).

    Args:
        scale_dtype: The dtype of the quantized tensors' scales and biases: float32 where the
            teacher runs in float32 (MLX's CPU path), float16 on Metal.
        source_sha256: The file's SHA-256, recorded in the config (computed by the caller).

    Returns:
        The written config.

    Raises:
        DistillError: truncated or unsupported file (architecture, tensor type, tensor name).
    """
    header = read_gguf_header(gguf_path)
    check_gguf_header(header)
    arch = header.architecture
    meta = _meta_reader(header)
    meta("attention.head_count", None)  # the metadata every architecture needs, checked before any work
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = _ShardWriter(folder)
    quantization: dict[str, dict] = {}
    extras: dict[str, np.ndarray] = {}
    lost: dict[str, list[str]] = {}
    lost_bits: dict[str, int] = {}
    names: set[str] = set()
    vocab_size = 0
    vision = [t for t in header.tensors if is_vision(t.name)]
    if vision:
        on_event(Log(f"{len(vision)} vision tensors skipped (the teacher reads text only)"))
    with open(header.path, "rb") as handle:
        for tensor in sorted(header.tensors, key=lambda t: t.name):
            if is_vision(tensor.name):
                continue
            raw = _read_tensor(handle, header, tensor)
            shape = _numpy_shape(tensor)
            if is_extra(arch, tensor.name):
                extras[tensor.name.rpartition(".")[0]] = np.array(
                    convert_tensor(raw, tensor.type_name, shape, mx.float32).weight.astype(mx.float32)).reshape(-1)
                continue
            stem, leaf = hf_stem(arch, tensor.name), tensor.name.rpartition(".")[2]
            converted = convert_tensor(raw, tensor.type_name, shape, scale_dtype)
            del raw
            if (change := row_change(arch, tensor.name, meta)) is not None:
                converted = converted.map_rows(change)
                mx.eval(*converted.arrays().values())
            if converted.scales is None and (change := float_change(arch, tensor.name)) is not None:
                converted = ConvertedTensor(change(converted.weight.astype(mx.float32)))
            if converted.scales is not None:
                quantization[stem] = {"group_size": GROUP_SIZE, "bits": converted.bits, "mode": "affine"}
                if not converted.exact:
                    lost.setdefault(tensor.type_name, []).append(tensor.name)
                    lost_bits[tensor.type_name] = converted.bits
            if stem == "model.embed_tokens":
                vocab_size = shape[0]
            for kind, array in converted.arrays().items():
                name = f"{stem}.{leaf}" if kind == "weight" else f"{stem}.{kind}"
                names.add(name)
                shards.add(name, array)
            del converted
            mx.clear_cache()  # freed buffers go back to the system, not into MLX's cache
    files = shards.finish()
    if lost:
        on_event(Log(_precision_note(lost, lost_bits), level="warning"))
    config = model_config(arch, meta, vocab_size, "lm_head.weight" not in names, extras)
    for key in ("bos_token_id", "eos_token_id"):
        value = header.metadata.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int):
            config[key] = value
    if quantization:
        counts = Counter(entry["bits"] for entry in quantization.values())
        config["quantization"] = {"group_size": GROUP_SIZE, "bits": counts.most_common(1)[0][0], "mode": "affine",
                                  **quantization}
        config["quantization_config"] = config["quantization"]
    config["mlx_distill_gguf"] = {
        "source": str(header.path), "sha256": source_sha256, "tensor_types": header.tensor_types(),
        "converter_version": CONVERTER_VERSION,
        "scale_dtype": str(scale_dtype).removeprefix("mlx.core."),
        "requantized": {kind: len(names_) for kind, names_ in lost.items()},
        "files": {file.name: file.stat().st_size for file in files},
    }
    _save_tokenizer(Path(header.path), folder)
    write_json_atomic(folder / "config.json", config)
    return config


def _save_tokenizer(gguf_path: Path, folder: Path) -> None:
    # transformers (seconds to import) reads the GGUF's tokenizer and chat template with `gguf`.
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError, OSError, ImportError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DistillError(f"{gguf_path}: transformers cannot build the tokenizer from this GGUF ({reason}); "
                           "use another file of the model or an MLX model folder") from None
    tokenizer.save_pretrained(str(folder))


def types_text(header: GGUFHeader) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(header.tensor_types().items()))
