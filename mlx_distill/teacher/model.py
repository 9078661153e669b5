"""Loading and releasing the teacher LLM: resolve, check, estimate memory, load, free.

The teacher runs through ``mlx_lm.load``. A GGUF teacher (a .gguf file, ``ollama:NAME[:TAG]``,
``lmstudio:PUBLISHER/MODEL``) is first converted once into an mlx-lm folder of the user cache
(``mlx_distill.teacher.gguf``). On a CPU-only MLX backend a quantized teacher is dequantized at
load and run in float32 (MLX's quantized matmul on CPU is single-threaded: at batch 8, 10-13x
slower than float32 here, see benchmarks/teacher_gguf.py); on Apple silicon it keeps the precision
it was saved in.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from safetensors import SafetensorError, safe_open

from mlx_distill.catalog import resolve_model
from mlx_distill.errors import DistillError
from mlx_distill.events import Log, MemoryReport, OnEvent, TeacherLoaded, TeacherReleased, ignore_event
from mlx_distill.machine import model_memory_budget
from mlx_distill.methods import TEACHER_BATCH_SIZE
from mlx_distill.platform import format_bytes, is_apple_gpu, total_memory_bytes
from mlx_distill.student import check_safetensors
from mlx_distill.teacher.gguf import GGUFHeader, check_gguf, gguf_teacher_folder, is_gguf_source

PRECISIONS = ("auto", "float32", "native")
QUANTIZE_BITS = (4, 8)
QUANT_GROUP_SIZE = 64
# Activations, MLX buffers and the tokenizer on top of weights + KV cache (fraction, estimate).
RUNTIME_OVERHEAD = 0.10
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2,
                "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

_current: "Teacher | None" = None


@dataclass
class Teacher:
    """A loaded teacher: the mlx-lm model and tokenizer wrapper, and what it is."""

    name: str  # the hub id or the resolved local folder, plus "@q4"/"@q8" when quantized here
    path: Path
    model: Any
    tokenizer: Any
    config: dict
    dtype: str
    weight_bytes: int
    precision: str = "auto"


@dataclass(frozen=True)
class MemoryEstimate:
    weight_bytes: int
    kv_cache_bytes: int
    total_bytes: int
    available_bytes: int

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.available_bytes


def teacher_identity(teacher: str, quantize: int | None = None) -> str:
    """The name recorded in rationale files: a hub id as given, a local folder as its absolute
    path (so reruns from another folder match), with ``@q4``/``@q8`` when quantized on load."""
    local = Path(teacher).expanduser()
    name = str(local.resolve()) if local.exists() else resolve_model(teacher)
    return f"{name}@q{quantize}" if quantize else name


def resolve_teacher_path(teacher: str, on_event: OnEvent = ignore_event, *, to_float32: bool = True) -> Path:
    """A local folder as is; a GGUF teacher converted (once) into the user cache (scales in float32
    when it will run in float32, else float16); a hub id (or catalog name) fetched (config and
    weights) through the Hugging Face cache, as ``mlx_lm.load`` would."""
    if is_gguf_source(teacher):
        return gguf_teacher_folder(teacher, on_event, to_float32=to_float32)
    local = Path(teacher).expanduser()
    if local.exists():
        if not local.is_dir():
            raise DistillError(f"teacher {local} is a file but not a GGUF model; give a .gguf file, the "
                               "model's folder (config.json + model.safetensors) or a Hugging Face hub id")
        return local
    repo = resolve_model(teacher)
    # Only for a hub id (mlx_lm imports transformers, which takes seconds).
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return Path(snapshot_download(repo, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except HFValidationError:
        raise DistillError(f"teacher {teacher!r} is neither a local folder nor a valid Hugging Face "
                           "hub id (owner/name); check the spelling") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        reason = type(error).__name__
        raise DistillError(f"teacher {repo!r} is not a local folder and could not be fetched from the "
                           f"Hugging Face hub ({reason}; offline or unknown id?); check the id and the "
                           "network, or pass a downloaded folder") from None


def _open_causal_lm(path: Path) -> dict:
    """The folder's config.json, after the checks that need no mlx-lm: a decoder LLM config, and
    whole safetensors files (headers and sizes; no weights read)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DistillError(f"{path} has no config.json, so it is not a Hugging Face model folder; "
                           "give a causal LM folder (config.json + model*.safetensors) or a hub id")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise DistillError(f"{config_file} is not valid JSON ({error}); re-download the model") from None
    if not isinstance(config, dict):
        raise DistillError(f"{config_file} is not a JSON object; re-download the model")
    model_type = config.get("model_type")
    architectures = " ".join(config.get("architectures") or [])
    if not model_type or config.get("is_encoder_decoder") or "ConditionalGeneration" in architectures:
        raise DistillError(f"{path} is not a causal LM (model_type {model_type!r}); the teacher must be "
                           "a decoder LLM such as Qwen2.5 or Llama, not an encoder-decoder like T5")
    weight_files = sorted(path.glob("model*.safetensors"))
    if not weight_files:
        raise DistillError(f"{path} has no model*.safetensors weights; convert or re-download the model")
    for file in weight_files:
        check_safetensors(file)
    return config


def check_causal_lm(path: Path) -> dict:
    """The folder's config.json, after checking that mlx-lm can run it as a decoder LLM."""
    config = _open_causal_lm(path)
    from mlx_lm.utils import _get_classes  # mlx_lm imports transformers (seconds): only once a teacher loads

    try:
        _get_classes(config)
    except ValueError:
        raise DistillError(f"{path}: model_type {config['model_type']!r} is not a decoder LLM that mlx-lm can "
                           "run; pick a supported causal LM (llama, qwen2, mistral, gemma, phi3, ...)") from None
    return config


def _cached_teacher_folder(repo: str) -> Path | None:
    """The local Hugging Face cache snapshot of ``repo``, or None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache  # huggingface_hub takes a while to import
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo, "config.json")
    except HFValidationError:
        raise DistillError(f"teacher {repo!r} is neither a local folder nor a valid Hugging Face "
                           "hub id (owner/name); check the spelling") from None
    return Path(found).parent if isinstance(found, str) else None


def check_teacher(teacher: str) -> None:
    """Open, without loading, a teacher: a decoder LLM config and whole safetensors files (headers
    and sizes). No weights are read, nothing is downloaded and mlx-lm is not imported (that takes
    seconds; whether mlx-lm supports the architecture is checked when the teacher loads).

    A hub id that is not in the local cache is not checked here (the hub may be reachable;
    ``load_teacher`` downloads it and checks it then).

    Raises:
        DistillError: a file given for a folder, an invalid hub id, no config.json, not a causal
            LM, no weights, or a corrupt or truncated weight file; one line with the fix.
    """
    if is_gguf_source(teacher):
        check_gguf(teacher)
        return
    local = Path(teacher).expanduser()
    if local.exists():
        path = resolve_teacher_path(teacher)
    elif teacher.startswith((".", "/", "~")):
        raise DistillError(f"teacher folder not found: {teacher}; give an existing model folder or a hub id")
    else:
        cached = _cached_teacher_folder(resolve_model(teacher))
        if cached is None:
            return
        path = cached
    _open_causal_lm(path)


def _safetensors_tensors(path: Path) -> dict[str, tuple[list[int], str]]:
    """(shape, dtype) of every weight in the folder's safetensors files, read from their headers."""
    tensors: dict[str, tuple[list[int], str]] = {}
    for file in sorted(path.glob("model*.safetensors")):
        try:
            with safe_open(file, "np") as weights:
                for name in weights.keys():
                    piece = weights.get_slice(name)
                    tensors[name] = (piece.get_shape(), piece.get_dtype())
        except (SafetensorError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DistillError(f"{file}: cannot read the safetensors header ({reason}); "
                               "re-download the model") from None
    return tensors


def runtime_weight_bytes(path: Path, config: dict, *, to_float32: bool, quantize: int | None) -> int:
    """Bytes the weights take once loaded (float32 on CPU, or as stored, or quantized here)."""
    tensors = _safetensors_tensors(path)
    quantization = config.get("quantization") or config.get("quantization_config") or {}
    if not isinstance(quantization, dict):
        quantization = {}
    total = 0
    for name, (shape, dtype) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        stored = count * _DTYPE_BYTES.get(dtype, 4)
        stem = name.rpartition(".")[0]
        # A layer's own entry (a GGUF holds 8-bit embeddings beside 4- and 6-bit layers), else the default.
        layer = quantization.get(stem)
        bits = layer.get("bits") if isinstance(layer, dict) else quantization.get("bits")
        if name.endswith((".scales", ".biases")) and bits:
            if not to_float32:
                total += stored  # as stored: float16 for a GGUF converted for Metal, float32 for the CPU
            continue
        if dtype == "U32" and bits:
            count = count * 32 // bits  # packed quantized weight -> its real element count
        if to_float32:
            total += count * 4
        elif quantize and len(shape) == 2:
            total += int(count * (quantize + 32 / QUANT_GROUP_SIZE) / 8)
        else:
            total += stored
    return total


def kv_cache_bytes(config: dict, tokens: int, element_bytes: int) -> int:
    text = config.get("text_config") or config
    layers = int(text.get("num_hidden_layers", 0))
    heads = int(text.get("num_attention_heads", 1))
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or text.get("hidden_size", 0) // max(heads, 1))
    return 2 * layers * kv_heads * head_dim * element_bytes * tokens


def estimate_memory(path: Path, config: dict, *, batch_size: int, prompt_tokens: int, max_tokens: int,
                    to_float32: bool, quantize: int | None = None,
                    available_bytes: int | None = None) -> MemoryEstimate:
    """Weights + KV cache for ``batch_size`` sequences of ``prompt_tokens + max_tokens``."""
    weights = runtime_weight_bytes(path, config, to_float32=to_float32, quantize=quantize)
    element_bytes = 4 if to_float32 else 2
    kv = kv_cache_bytes(config, batch_size * (prompt_tokens + max_tokens), element_bytes)
    total = int((weights + kv) * (1 + RUNTIME_OVERHEAD))
    # The memory free now, at most MLX's memory limit (a run sets it from the device: mlx_distill.machine).
    available = model_memory_budget() if available_bytes is None else available_bytes
    return MemoryEstimate(weights, kv, total, available)


def gguf_memory_estimate(header: GGUFHeader, *, batch_size: int, prompt_tokens: int, max_tokens: int,
                         to_float32: bool, available_bytes: int | None = None) -> MemoryEstimate:
    """``estimate_memory`` from a GGUF file's header alone, before it is converted: float32 weights
    on the CPU path, else about the file's size (MLX holds the types with one scale and bias per 32
    weights, as the GGUF holds its own)."""
    meta = header.metadata
    arch = header.architecture
    heads = int(meta.get(f"{arch}.attention.head_count") or 1)
    config = {"num_hidden_layers": int(meta.get(f"{arch}.block_count") or 0), "num_attention_heads": heads,
              "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv") or heads),
              "head_dim": int(meta.get(f"{arch}.attention.key_length") or
                              int(meta.get(f"{arch}.embedding_length") or 0) // heads)}
    elements = sum(tensor.elements for tensor in header.tensors)
    weights = elements * 4 if to_float32 else Path(header.path).stat().st_size
    kv = kv_cache_bytes(config, batch_size * (prompt_tokens + max_tokens), 4 if to_float32 else 2)
    total = int((weights + kv) * (1 + RUNTIME_OVERHEAD))
    available = model_memory_budget() if available_bytes is None else available_bytes
    return MemoryEstimate(weights, kv, total, available)


def _fit_message(teacher: str, estimate: MemoryEstimate, batch_size: int, tokens: int) -> str:
    need = (f"teacher {teacher} needs about {format_bytes(estimate.total_bytes)} (weights "
            f"{format_bytes(estimate.weight_bytes)} + KV cache {format_bytes(estimate.kv_cache_bytes)} "
            f"for batch {batch_size} x {tokens} tokens) but only {format_bytes(estimate.available_bytes)} "
            "is available to MLX")
    weights_only = estimate.weight_bytes * (1 + RUNTIME_OVERHEAD)
    if weights_only < estimate.available_bytes and batch_size > 1:
        per_sequence = estimate.kv_cache_bytes / batch_size * (1 + RUNTIME_OVERHEAD)
        smaller = int((estimate.available_bytes - weights_only) // max(per_sequence, 1))
        if smaller >= 1:
            return f"{need}; try --batch-size {min(smaller, batch_size - 1)} or fewer --max-tokens"
    return f"{need}; pick a smaller teacher (see `mlx-distill models`) or a 4-bit one"


def memory_report(stage: str = "teacher") -> MemoryReport:
    return MemoryReport(stage=stage, active=int(mx.get_active_memory()), peak=int(mx.get_peak_memory()),
                        total=int(total_memory_bytes()))


def load_teacher(teacher: str, *, quantize: int | None = None, precision: str = "auto",
                 batch_size: int = TEACHER_BATCH_SIZE, prompt_tokens: int = 1024, max_tokens: int = 256,
                 on_event: OnEvent = ignore_event, reuse: bool = False) -> Teacher:
    """Check, size and load a teacher LLM with mlx-lm.

    Args:
        teacher: A local folder, a Hugging Face hub id, a catalog name, or a GGUF model (a .gguf
            file, ``ollama:NAME[:TAG]``, ``lmstudio:PUBLISHER/MODEL``), converted once.
        quantize: 4 or 8 to quantize an unquantized model on load (mlx-lm's own quantization).
        precision: ``auto`` (float32 on a CPU-only device, as stored on Apple GPU), ``float32``, or
            ``native`` (as stored, quantized layers kept).
        batch_size, prompt_tokens, max_tokens: Sizes for the KV-cache part of the memory estimate.
        on_event: Receives Log, TeacherLoaded and MemoryReport events.
        reuse: Return the current teacher when it is this one (same model, quantization and
            precision) instead of loading it again (the prompt lab's trials of one search).

    Returns:
        The loaded teacher; also kept as the current one until ``release_teacher()``.

    Raises:
        DistillError: Unknown model, not a causal LM, bad option, or not enough memory.
    """
    global _current
    if quantize is not None and quantize not in QUANTIZE_BITS:
        raise DistillError(f"--quantize {quantize} is not supported; use 4 or 8")
    if precision not in PRECISIONS:
        raise DistillError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if reuse and _current is not None and (_current.name, _current.precision) == (
            teacher_identity(teacher, quantize), precision):
        on_event(Log(f"teacher {_current.name} still loaded: reused"))
        return _current
    release_teacher()
    start = time.perf_counter()
    to_float32 = precision == "float32" or (precision == "auto" and not is_apple_gpu())
    if is_gguf_source(teacher):  # refused before minutes of conversion when it cannot fit anyway
        early = gguf_memory_estimate(check_gguf(teacher), batch_size=batch_size, prompt_tokens=prompt_tokens,
                                     max_tokens=max_tokens, to_float32=to_float32)
        if not early.fits:
            raise DistillError(_fit_message(teacher, early, batch_size, prompt_tokens + max_tokens))
    path = resolve_teacher_path(teacher, on_event, to_float32=to_float32)
    config = check_causal_lm(path)
    already_quantized = bool(config.get("quantization") or config.get("quantization_config"))
    if quantize and already_quantized:
        on_event(Log(f"{teacher} is already quantized; --quantize {quantize} ignored", level="warning"))
        quantize = None
    estimate = estimate_memory(path, config, batch_size=batch_size, prompt_tokens=prompt_tokens,
                               max_tokens=max_tokens, to_float32=to_float32, quantize=quantize)
    if not estimate.fits:
        raise DistillError(_fit_message(teacher, estimate, batch_size, prompt_tokens + max_tokens))

    from mlx_lm import load  # mlx_lm imports transformers (seconds): only once a teacher loads
    from mlx_lm.utils import dequantize_model, quantize_model

    try:
        model, tokenizer = load(str(path), lazy=True)
    except (ValueError, FileNotFoundError) as error:
        raise DistillError(f"mlx-lm cannot load teacher {path}: {error}") from None
    if quantize:
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            model, config = quantize_model(model, config, QUANT_GROUP_SIZE, quantize)
        on_event(Log(f"quantized {teacher} to {quantize} bits with mlx-lm: {captured.getvalue().strip()}"))
    if to_float32:
        if already_quantized or quantize:
            model = dequantize_model(model)
            on_event(Log("CPU device: teacher dequantized to float32 (MLX's quantized CPU matmul is slower)"))
        model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    model.eval()

    params = tree_flatten(model.parameters())
    weight_bytes = sum(v.nbytes for _, v in params)
    dtypes = sorted({str(v.dtype).replace("mlx.core.", "") for _, v in params if mx.issubdtype(v.dtype, mx.floating)})
    dtype = "/".join(dtypes) + (f" + {quantize or config.get('quantization', {}).get('bits', '')}-bit"
                                if (quantize or already_quantized) and not to_float32 else "")
    _current = Teacher(teacher_identity(teacher, quantize), path, model, tokenizer, config, dtype, weight_bytes,
                       precision)
    on_event(TeacherLoaded(model=_current.name, dtype=dtype, weight_bytes=weight_bytes,
                           seconds=time.perf_counter() - start))
    on_event(memory_report())
    return _current


def release_teacher(on_event: OnEvent = ignore_event) -> None:
    """Drop the current teacher, free MLX's buffer cache and report the stage's peak memory."""
    global _current
    if _current is None:
        return
    peak = int(mx.get_peak_memory())
    _current.model = None
    _current.tokenizer = None
    _current = None
    gc.collect()
    mx.clear_cache()
    on_event(TeacherReleased(peak_bytes=peak, active_bytes_after=int(mx.get_active_memory())))


def current_teacher() -> Teacher | None:
    return _current
