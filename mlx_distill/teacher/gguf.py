"""GGUF teachers: a .gguf file (or an Ollama / LM Studio model) becomes an mlx-lm model folder.

The file is converted once into a folder of the user cache keyed by its SHA-256, then loaded by
mlx-lm like any other folder. Quantized tensors stay quantized:

* Q4_0, Q4_1 and Q8_0 come out of ``mx.load`` as MLX affine triples (4 or 8 bits, group size 32),
  bit-exactly; their float16 scales and biases are stored as float32 so that MLX computes
  ``scale * q + bias`` in float32, as llama.cpp does;
* Q2_K, Q4_K and Q6_K come out of ``mx.load`` as float16 and are re-quantized to MLX 4-bit
  (group size 64), said in the log with the memory it takes, rather than kept at 16 bits;
* F32 and F16 stay as they are; other types are refused (``gguf_file.check_gguf_header``).

Each tensor's bit width goes into the config's per-layer ``quantization`` entries (a Q8_0
embedding beside Q4_1 layers). llama.cpp permutes the rows of Llama's Q and K projections for its
rope layout; the converter undoes that on whole rows (packed weight, scales and biases alike).
The tokenizer and chat template come from the GGUF's own metadata, through transformers' GGUF
reader (the ``gguf`` package).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event
from mlx_distill.files import exclusive_lock, lock_path_for, publish_dir, write_json_atomic
from mlx_distill.platform import format_bytes
from mlx_distill.teacher.gguf_file import EXACT_QUANT_TYPES, KQUANT_TYPES, GGUFHeader, check_gguf_header, read_gguf_header

# Bumped when the converter's output changes, so old cache folders are not reused.
CONVERTER_VERSION = 1
REQUANT_BITS = 4
REQUANT_GROUP_SIZE = 64
EXACT_GROUP_SIZE = 32
SHARD_BYTES = 2 * 1024**3
# How long a second process waits for another one converting the same file.
LOCK_WAIT_SECONDS = 1800

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def cache_root() -> Path:
    """mlx-distill's user cache: ``$MLX_DISTILL_CACHE``, else ``$XDG_CACHE_HOME/mlx-distill``,
    else ``~/.cache/mlx-distill``."""
    if os.environ.get("MLX_DISTILL_CACHE"):
        return Path(os.environ["MLX_DISTILL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "mlx-distill"


# ---------------------------------------------------------------------------------------------
# Where a GGUF file is: a path, ollama:NAME[:TAG] or lmstudio:PUBLISHER/MODEL[/FILE.gguf]


def is_gguf_source(teacher: str) -> bool:
    """Whether ``teacher`` names a GGUF model (a .gguf path, ``ollama:...`` or ``lmstudio:...``)."""
    if teacher.startswith(("ollama:", "lmstudio:")) or teacher.lower().endswith(".gguf"):
        return True
    path = Path(teacher).expanduser()
    if path.is_file():
        with path.open("rb") as handle:
            return handle.read(4) == b"GGUF"
    return False


_OLLAMA_DIGEST = re.compile(r"^sha256[:-][0-9a-f]{64}$")


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` with every link and ``..`` resolved, refused when that leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise DistillError(f"{what} leads outside {root} (to {real}); give a model name as the app lists it")
    return real


def ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def lmstudio_root() -> Path:
    return Path(os.environ.get("LMSTUDIO_MODELS") or "~/.lmstudio/models").expanduser()


def _manifest_model_digest(manifest: Path, name: str) -> str:
    """The digest of the model layer an Ollama manifest names (checked: a sha256 digest)."""
    again = f"run `ollama pull {name}` again"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DistillError(f"Ollama manifest {manifest} is not readable JSON ({type(error).__name__}); {again}") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise DistillError(f"Ollama manifest {manifest} has no list of layers; {again}")
    models = [layer for layer in layers
              if isinstance(layer, dict) and layer.get("mediaType") == "application/vnd.ollama.image.model"]
    if not models:
        raise DistillError(f"Ollama manifest {manifest} names no model layer; {again}")
    digest = models[0].get("digest")
    if not isinstance(digest, str) or not _OLLAMA_DIGEST.match(digest):
        raise DistillError(f"Ollama manifest {manifest}: the model layer's digest {digest!r} is not a sha256 "
                           f"digest; {again}")
    return digest


def _ollama_blob(name: str) -> Path:
    root = ollama_root()
    model, _, tag = name.partition(":")
    repo = model if "/" in model else f"library/{model}"
    manifests = root / "manifests" / "registry.ollama.ai"
    manifest = _inside(manifests, manifests / repo / (tag or "latest"), f"Ollama model name {name!r}")
    if not manifest.is_file():
        raise DistillError(f"Ollama model {name!r} is not pulled (no {manifest}); run `ollama pull {name}` "
                           "or set OLLAMA_MODELS to your models folder")
    digest = _manifest_model_digest(manifest, name)
    blob = _inside(root / "blobs", root / "blobs" / digest.replace(":", "-"), f"Ollama model {name!r}'s blob")
    if not blob.is_file():
        raise DistillError(f"Ollama model {name!r}: its weights {blob} are missing; run `ollama pull {name}` again")
    return blob


def _lmstudio_file(name: str) -> Path:
    root = lmstudio_root()
    path = _inside(root, root / name, f"LM Studio model name {name!r}")
    if path.is_file():
        return path
    if not path.is_dir():
        raise DistillError(f"LM Studio model {name!r} not found ({path} does not exist); download it in LM Studio "
                           "or give PUBLISHER/MODEL as listed under ~/.lmstudio/models (or set LMSTUDIO_MODELS)")
    files = sorted(path.glob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "no .gguf file"
        raise DistillError(f"LM Studio model folder {path} holds {found}; name one file: lmstudio:{name}/FILE.gguf")
    return _inside(root, files[0], f"LM Studio model {name!r}")


def resolve_gguf(teacher: str) -> Path:
    """The GGUF file a teacher name points to (see ``is_gguf_source``).

    Raises:
        DistillError: the file does not exist, an Ollama model is not pulled, or an LM Studio
            model is not downloaded; one line with the fix.
    """
    if teacher.startswith("ollama:"):
        return _ollama_blob(teacher.removeprefix("ollama:"))
    if teacher.startswith("lmstudio:"):
        return _lmstudio_file(teacher.removeprefix("lmstudio:"))
    path = Path(teacher).expanduser()
    if not path.is_file():
        raise DistillError(f"GGUF file not found: {teacher}; give an existing .gguf file")
    return path.resolve()


def check_gguf(teacher: str) -> GGUFHeader:
    """Resolve and open a GGUF teacher without loading or converting it (header checks only)."""
    header = read_gguf_header(resolve_gguf(teacher))
    check_gguf_header(header)
    return header


# ---------------------------------------------------------------------------------------------
# Conversion


def _file_sha256(path: Path) -> str:
    if path.name.startswith("sha256-") and len(path.name) == 71:  # an Ollama blob is named by its hash
        return path.name.removeprefix("sha256-")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _meta(header: GGUFHeader, key: str, default=None):
    value = header.metadata.get(f"{header.architecture}.{key}", default)
    if value is None:
        raise DistillError(f"{header.path}: GGUF metadata {header.architecture}.{key} is missing; "
                           "the file is incomplete or not a language model")
    return value


def _hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (also .scales/.biases/.bias)."""
    stem, _, leaf = gguf_name.rpartition(".")
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{leaf}"
    if len(parts) == 1 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{leaf}"
    raise DistillError(f"GGUF tensor {gguf_name!r} has no place in a llama/qwen2 model; the file is not a "
                       "plain Llama/Mistral/Qwen2 model")


def _unpermute_rows(array: mx.array, heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row order (rope pairs interleaved) on whole rows: the first axis."""
    rows = array.shape[0]
    rest = array.shape[1:]
    return array.reshape(heads, rows // heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _llama3_rope_scaling(factors: np.ndarray, base: float, head_dim: int) -> dict:
    """The ``llama3`` rope_scaling whose per-frequency factors are the GGUF's ``rope_freqs``."""
    scaling = {"rope_type": "llama3", "factor": float(factors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    wavelens = 2 * np.pi * base ** (np.arange(0, head_dim, 2) / head_dim)
    low, high = 8192 / 1.0, 8192 / 4.0
    smooth = (8192 / wavelens - 1.0) / (4.0 - 1.0)
    expected = np.where(wavelens > low, scaling["factor"],
                        np.where(wavelens < high, 1.0, 1 / ((1 - smooth) / scaling["factor"] + smooth)))
    if expected.shape != factors.shape or not np.allclose(expected, factors, rtol=1e-3):
        raise DistillError("GGUF rope_freqs are not Llama 3's rope scaling; this model's rope is not supported")
    return scaling


def _float32(value: float) -> float:
    """A GGUF float32 as the short decimal it was written from (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _model_config(header: GGUFHeader, weights: dict, rope_freqs: mx.array | None) -> dict:
    arch = header.architecture
    heads = int(_meta(header, "attention.head_count"))
    hidden = int(_meta(header, "embedding_length"))
    head_dim = int(header.metadata.get(f"{arch}.attention.key_length") or hidden // heads)
    embed = weights["model.embed_tokens.weight"]
    config = {
        "model_type": arch,
        "architectures": [_HF_ARCHITECTURES[arch]],
        "hidden_size": hidden,
        "num_hidden_layers": int(_meta(header, "block_count")),
        "intermediate_size": int(_meta(header, "feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_meta(header, "attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _float32(_meta(header, "attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32(_meta(header, "rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_meta(header, "context_length")),
        "vocab_size": int(embed.shape[0]),
        "tie_word_embeddings": "lm_head.weight" not in weights,
    }
    if rope_freqs is not None:
        config["rope_scaling"] = _llama3_rope_scaling(np.array(rope_freqs.astype(mx.float32)),
                                                      config["rope_theta"], head_dim)
    for key in ("bos_token_id", "eos_token_id"):
        value = header.metadata.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int):
            config[key] = value
    return config


def _convert_weights(header: GGUFHeader, on_event: OnEvent) -> tuple[dict, dict, mx.array | None]:
    """(HF-named weights, per-layer quantization entries, rope_freqs or None)."""
    try:
        loaded = mx.load(str(header.path), format="gguf")
    except (RuntimeError, ValueError) as error:
        raise DistillError(f"{header.path}: MLX cannot read this GGUF file ({error}); download it again") from None
    types = {t.name: t.type_name for t in header.tensors}
    arch = header.architecture
    q_heads = int(_meta(header, "attention.head_count"))
    kv_heads = int(_meta(header, "attention.head_count_kv", q_heads))
    rope_freqs = loaded.pop("rope_freqs.weight", None)
    weights: dict[str, mx.array] = {}
    quantization: dict[str, dict] = {}
    requantized_bytes = 0
    for name in sorted(loaded):
        array = loaded.pop(name)
        stem, _, leaf = name.rpartition(".")
        kind = types.get(f"{stem}.weight", types.get(name, "F32"))
        hf = _hf_name(name)
        # llama.cpp's rope row order (Llama only; Qwen2's GGUF keeps Hugging Face's).
        if arch == "llama" and ".attn_q." in name:
            array = _unpermute_rows(array, q_heads)
        elif arch == "llama" and ".attn_k." in name:
            array = _unpermute_rows(array, kv_heads)
        if leaf in ("scales", "biases"):
            array = array.astype(mx.float32)
        elif leaf == "weight" and kind in KQUANT_TYPES and array.ndim == 2:
            array, scales, biases = mx.quantize(array, group_size=REQUANT_GROUP_SIZE, bits=REQUANT_BITS)
            hf_stem = hf.rpartition(".")[0]
            weights[f"{hf_stem}.scales"] = scales.astype(mx.float32)
            weights[f"{hf_stem}.biases"] = biases.astype(mx.float32)
            quantization[hf_stem] = {"group_size": REQUANT_GROUP_SIZE, "bits": REQUANT_BITS, "mode": "affine"}
            requantized_bytes += array.nbytes + 2 * scales.size * 4
        elif leaf == "weight" and kind in EXACT_QUANT_TYPES:
            quantization[hf.rpartition(".")[0]] = {"group_size": EXACT_GROUP_SIZE, "bits": EXACT_QUANT_TYPES[kind],
                                                   "mode": "affine"}
        weights[hf] = array
    requant = sorted({kind for kind in types.values() if kind in KQUANT_TYPES})
    if requant:
        on_event(Log(f"{'/'.join(requant)} tensors re-quantized to MLX {REQUANT_BITS}-bit (group size "
                     f"{REQUANT_GROUP_SIZE}): {format_bytes(requantized_bytes)} instead of 16-bit"))
    return weights, quantization, rope_freqs


def _save_shards(weights: dict, folder: Path) -> None:
    shards: list[dict] = [{}]
    size = 0
    for name in sorted(weights):
        if size > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += weights[name].nbytes
    for index, shard in enumerate(shards, start=1):
        mx.eval(list(shard.values()))
        file = folder / ("model.safetensors" if len(shards) == 1 else f"model-{index:05d}-of-{len(shards):05d}.safetensors")
        mx.save_safetensors(str(file), shard, metadata={"format": "mlx"})


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


def convert_gguf(gguf_path: str | Path, folder: str | Path, on_event: OnEvent = ignore_event) -> dict:
    """Write ``gguf_path`` as an mlx-lm model folder ``folder`` (config.json, safetensors, tokenizer).

    Returns:
        The written config.

    Raises:
        DistillError: truncated or unsupported file (architecture, tensor type, tensor name).
    """
    header = read_gguf_header(gguf_path)
    check_gguf_header(header)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, quantization, rope_freqs = _convert_weights(header, on_event)
    config = _model_config(header, weights, rope_freqs)
    if quantization:
        counts: dict[tuple, int] = {}
        for entry in quantization.values():
            key = (entry["group_size"], entry["bits"])
            counts[key] = counts.get(key, 0) + 1
        group_size, bits = max(counts, key=counts.get)
        config["quantization"] = {"group_size": group_size, "bits": bits, "mode": "affine", **quantization}
        config["quantization_config"] = config["quantization"]
    config["mlx_distill_gguf"] = {"source": str(header.path), "tensor_types": header.tensor_types(),
                                  "converter_version": CONVERTER_VERSION}
    _save_shards(weights, folder)
    del weights
    _save_tokenizer(Path(header.path), folder)
    write_json_atomic(folder / "config.json", config)
    return config


def gguf_teacher_folder(teacher: str, on_event: OnEvent = ignore_event) -> Path:
    """The mlx-lm folder of a GGUF teacher, converted into the user cache on first use.

    The folder is keyed by the file's SHA-256 and written beside its final place, then published
    whole (``files.publish_dir``), under a lock: a failure or a kill leaves nothing half-written,
    and a second process converting the same file waits for the first.
    """
    header = check_gguf(teacher)
    key = _file_sha256(header.path)[:20]
    root = cache_root() / "gguf"
    final = root / f"{key}-v{CONVERTER_VERSION}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            with exclusive_lock(lock_path_for(final), f"GGUF conversion {final}"):
                if (final / "config.json").is_file():  # done by the process we waited for
                    return final
                temp = root / f".{final.name}.tmp-{os.getpid()}"
                shutil.rmtree(temp, ignore_errors=True)
                start = time.perf_counter()
                on_event(Log(f"converting {header.path.name} ({format_bytes(header.path.stat().st_size)}, "
                             f"{_types_text(header)}) into an MLX model folder, once: {final}"))
                try:
                    convert_gguf(header.path, temp, on_event)
                    publish_dir(temp, final)
                finally:
                    shutil.rmtree(temp, ignore_errors=True)
                on_event(Log(f"converted {header.path.name} in {time.perf_counter() - start:.1f}s"))
                return final
        except DistillError as error:
            if "is already being written" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _types_text(header: GGUFHeader) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(header.tensor_types().items()))
