"""The T5 student on disk: load and save in the Hugging Face layout, create, quantize, count parameters.

``load_student`` reads a local folder or a hub id (safetensors, sharded safetensors, or
``pytorch_model.bin`` through an optional torch), and a quantized student (MLX affine
quantization, ``quantization`` in config.json and ``scales``/``biases`` beside each packed weight,
as mlx-lm names them; only this loader reads a quantized T5: transformers refuses the config and
mlx-lm has no T5).
Generation is in `mlx_distill.student.generate`.
"""

from __future__ import annotations

import errno
import json
import pickle
import re
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlx_distill.errors import DistillError
from mlx_distill.files import check_publish_target, publish_dir
from mlx_distill.student.t5 import T5_MODEL_TYPES, Model, ModelArgs

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}

# Only what load_student needs from a hub repo (not the TF/Flax/ONNX copies).
_HUB_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
]
_HUB_TORCH_FILES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_OFFLINE_HINT = (
    "to work offline, download it once with network access (it is then cached), or pass a local "
    "folder, and set HF_HUB_OFFLINE=1"
)


# A safetensors header is a few KB to a few MB; anything near this is a corrupt length field.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2,
                            "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U64": 8}


def parse_dtype(dtype: str) -> mx.Dtype:
    """The MLX dtype for a name in DTYPES; DistillError for anything else."""
    if dtype not in DTYPES:
        raise DistillError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------
# Checking without loading


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None when its header and sizes add up."""
    size = path.stat().st_size
    if size < 8:
        return f"it is {size} bytes long, shorter than a safetensors header"
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
            return f"its header claims {header_len} bytes but the file is {size} bytes"
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError:
        return "its header is not readable JSON"
    if not isinstance(header, dict):
        return "its header is not a table of tensors"
    data_bytes = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            return f"its header entry for {name!r} is malformed"
        begin, end = offsets
        if not 0 <= begin <= end:
            return f"its header entry for {name!r} is malformed"
        if end > data_bytes:
            return f"tensor {name!r} ends at byte {end} of the data but the file holds only {data_bytes}"
        count = 1
        for dim in shape:
            count *= dim
        element = _SAFETENSORS_DTYPE_BYTES.get(entry.get("dtype"))
        if element is not None and count * element != end - begin:
            return f"tensor {name!r} has {end - begin} bytes for shape {shape}"
    return None


def check_safetensors(path: str | Path) -> None:
    """Check a ``.safetensors`` file's header and that the file is as long as the header says,
    without reading the weights.

    Raises:
        DistillError: one line naming the file, what is wrong and the fix (re-download).
    """
    path = Path(path)
    try:
        problem = _safetensors_problem(path)
    except OSError as error:
        problem = f"it cannot be read ({error.strerror or error})"
    if problem is not None:
        raise DistillError(f"{path} is corrupt or truncated ({problem}); re-download the model")


def _weight_files(folder: Path) -> list[Path]:
    """The weight files ``load_student`` would read (index shards first); DistillError when none."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError, TypeError) as e:
                raise DistillError(f"{index} is not a valid weight index ({e}); re-download the model") from None
            return [folder / s for s in shards]
    single = sorted(folder.glob("*.safetensors"))
    if single:
        return single
    if (folder / "pytorch_model.bin").is_file():
        return [folder / "pytorch_model.bin"]
    raise DistillError(
        f"no weights in {folder} (expected model.safetensors, sharded safetensors with "
        "model.safetensors.index.json, or pytorch_model.bin)"
    )


def _cached_hub_folder(repo_id: str) -> Path | None:
    """The local Hugging Face cache snapshot of ``repo_id``, or None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache  # huggingface_hub takes a while to import
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:
        return None
    return Path(found).parent if isinstance(found, str) else None


def check_student(path_or_hub_id: str | Path) -> None:
    """Open, without loading, a student checkpoint: its config.json must be a T5's and its
    weight files whole (safetensors headers and sizes). Cheap: no weights are read.

    A hub id that is not in the local cache is not checked here (the hub may be reachable; loading
    downloads it and says what is wrong then).

    Raises:
        DistillError: a missing folder, a file given for a folder, a missing or non-T5 config.json,
            missing weights, or a corrupt or truncated weight file; one line with the fix.
    """
    path = Path(path_or_hub_id).expanduser()
    text = str(path_or_hub_id)
    if path.is_dir():
        folder = path
    elif path.exists():
        raise DistillError(f"{text} is a file; pass the checkpoint folder that holds config.json")
    elif text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise DistillError(f"model folder not found: {text}; pass an existing folder or a hub id like google/flan-t5-small")
    else:
        cached = _cached_hub_folder(text)
        if cached is None:
            return
        folder = cached
    _read_config(folder)
    for file in _weight_files(folder):
        if not file.is_file():
            raise DistillError(f"weight file {file} is missing (listed in the index); re-download the model")
        if file.suffix == ".safetensors":
            check_safetensors(file)


# ---------------------------------------------------------------------------------------------
# Loading


def _download(repo_id: str, patterns: list[str]) -> Path:
    # huggingface_hub is needed only for hub ids, and takes a while to import.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except GatedRepoError as e:
        raise DistillError(
            f"the hub model {repo_id!r} is gated; accept its terms on huggingface.co and log in "
            f"with `hf auth login` ({type(e).__name__})"
        ) from None
    except RepositoryNotFoundError:
        raise DistillError(
            f"no model {repo_id!r} on the Hugging Face hub (check the name, or log in for a private "
            "repo); for a local model pass an existing folder"
        ) from None
    except LocalEntryNotFoundError:
        raise DistillError(
            f"cannot reach the Hugging Face hub to download {repo_id!r} and it is not in the local "
            f"cache; {_OFFLINE_HINT}"
        ) from None


def _resolve_folder(path_or_hub_id: str | Path) -> Path:
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    if path.exists():
        raise DistillError(f"{text} is a file; pass the checkpoint folder that holds config.json")
    if text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        raise DistillError(f"model folder not found: {text}; pass an existing folder or a hub id like google/flan-t5-small")
    folder = _download(text, _HUB_FILES)
    if not list(folder.glob("*.safetensors")):
        folder = _download(text, _HUB_FILES + _HUB_TORCH_FILES)
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DistillError(f"no config.json in {folder}; a student model folder is a Hugging Face T5 checkpoint")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DistillError(f"{config_path} is not valid JSON ({e}); re-download or re-export the model") from None
    if not isinstance(config, dict):
        raise DistillError(f"{config_path} is not a JSON object; re-download or re-export the model")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in T5_MODEL_TYPES:
        found = f"a {architectures[0]} model" if architectures else "a model of unknown architecture"
        raise DistillError(
            f"{folder} holds {found} (model_type {model_type!r}), not a T5 student; pick a T5-family "
            "checkpoint (T5ForConditionalGeneration) such as google/flan-t5-small"
        )
    return config


def _load_torch_bin(files: list[Path]) -> dict[str, mx.array]:
    try:
        import torch  # optional: only for pytorch_model.bin checkpoints
    except ImportError:
        raise DistillError(
            f"{files[0].parent} only has {files[0].name} (PyTorch pickle) and torch is not installed; "
            "install torch, or convert it once with transformers: "
            "T5ForConditionalGeneration.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
        ) from None
    weights = {}
    for file in files:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            raise DistillError(f"cannot read {file} ({type(e).__name__}: {e}); re-download the model") from None
        for name, tensor in state.items():
            array = mx.array(tensor.float().numpy())
            weights[name] = array.astype(mx.bfloat16) if tensor.dtype == torch.bfloat16 else array
    return weights


def _load_safetensors(files: list[Path]) -> dict[str, mx.array]:
    weights = {}
    for file in files:
        if not file.is_file():
            raise DistillError(f"weight file {file} is missing (listed in the index); re-download the model")
        check_safetensors(file)
        try:
            weights.update(mx.load(str(file)))
        except (RuntimeError, ValueError, OSError) as e:
            raise DistillError(f"cannot read {file} ({e}); the file is corrupt or truncated, re-download it") from None
    return weights


def _load_weights(folder: Path) -> dict[str, mx.array]:
    files = _weight_files(folder)
    if files[0].name.endswith(".bin"):
        return _load_torch_bin(files)
    return _load_safetensors(files)


def _has_separate_head(weights: dict[str, mx.array]) -> bool:
    head, shared = weights.get("lm_head.weight"), weights.get("shared.weight")
    if head is None:
        return False
    return shared is None or head.shape != shared.shape or not mx.array_equal(head, shared).item()


# Read back through a loaded tokenizer: one without a vocabulary turns it all into <unk> and spaces.
_VOCABULARY_PROBE = "What is 12 plus 30? The answer is 42."


# transformers' lazy module is not safe to import from two threads at once (one of them gets
# "cannot import name 'AutoTokenizer'"): two servers, or a server and the TUI, load together.
_TRANSFORMERS_IMPORT = threading.Lock()


def load_tokenizer(folder: str | Path):
    """The transformers tokenizer saved in a checkpoint folder (any thread).

    Raises:
        DistillError: it cannot be loaded, or it has no vocabulary (a folder without spiece.model
            or tokenizer.json, where transformers builds a tokenizer that reads every word as
            unknown and the student would answer empty strings).
    """
    from huggingface_hub.errors import StrictDataclassError

    with _TRANSFORMERS_IMPORT:
        from transformers import AutoTokenizer  # transformers takes seconds to import

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise DistillError(
            f"cannot load the tokenizer in {folder} ({e}); the folder needs spiece.model or tokenizer.json"
        ) from None
    except StrictDataclassError as e:  # transformers checks config.json's types while loading it
        raise DistillError(f"transformers refuses {Path(folder) / 'config.json'} ({' '.join(str(e).split())}); "
                           "re-download or re-export the model") from None
    ids = tokenizer(_VOCABULARY_PROBE, add_special_tokens=False)["input_ids"]
    if not tokenizer.decode([i for i in ids if i != tokenizer.unk_token_id], skip_special_tokens=True).strip():
        raise DistillError(f"{folder} has no tokenizer vocabulary (no spiece.model or tokenizer.json); copy the "
                           "tokenizer files of the model it was trained from into it")
    return tokenizer


def load_student(path_or_hub_id: str | Path, dtype: str = "float32") -> tuple[Model, Any]:
    """Load a T5-family checkpoint (local folder or hub id) as an MLX model and its tokenizer.

    Args:
        path_or_hub_id: A folder in the Hugging Face layout, or a hub id such as
            ``google/flan-t5-small`` (only the needed files are downloaded).
        dtype: Compute dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``. Default: ``"float32"``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        DistillError: unknown dtype, missing folder, unreachable hub id, not a T5, missing or
            corrupt weights, weights that do not fit the config.
    """
    compute_dtype = parse_dtype(dtype)
    folder = _resolve_folder(path_or_hub_id)
    config = _read_config(folder)
    try:
        args = ModelArgs.from_dict(config)
    except (TypeError, ValueError) as e:
        raise DistillError(f"{folder / 'config.json'} is not a usable T5 config: {e}; "
                           "re-download or re-export the model") from None
    weights = _load_weights(folder)
    if "shared.weight" not in weights and "encoder.embed_tokens.weight" in weights:
        weights["shared.weight"] = weights["encoder.embed_tokens.weight"]
    args.separate_lm_head = _has_separate_head(weights)
    model = Model(args)
    weights = model.sanitize(weights)
    if config.get("quantization") is not None:
        _quantize_like_checkpoint(model, config["quantization"], weights, folder)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise DistillError(f"the weights in {folder} do not match its config.json: {e}") from None
    model.set_dtype(compute_dtype)
    mx.eval(model.parameters())
    model.eval()
    return model, load_tokenizer(folder)


# ---------------------------------------------------------------------------------------------
# Creating and saving


def init_student(args_or_config_dict: ModelArgs | dict[str, Any], tokenizer, seed: int = 0) -> Model:
    """A T5 with fresh random weights, initialised as transformers initialises T5.

    Args:
        args_or_config_dict: ``ModelArgs`` or a config.json-style dict. A missing ``vocab_size``
            becomes the tokenizer's size.
        tokenizer: The tokenizer the model will use (gives vocab size, pad and eos ids).
        seed: Random seed for the weights.

    Returns:
        The model, in eval mode.
    """
    if isinstance(args_or_config_dict, ModelArgs):
        config = dict(vars(args_or_config_dict))
    else:
        config = dict(args_or_config_dict)
    config.setdefault("vocab_size", len(tokenizer))
    if config["vocab_size"] < len(tokenizer):
        raise DistillError(
            f"vocab_size {config['vocab_size']} is smaller than the tokenizer ({len(tokenizer)} tokens); "
            "raise vocab_size or leave it out"
        )
    config["pad_token_id"] = tokenizer.pad_token_id
    config["eos_token_id"] = tokenizer.eos_token_id
    config.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
    args = ModelArgs.from_dict(config)
    model = Model(args)
    d, kv, h, ff = args.d_model, args.d_kv, args.num_heads, args.d_ff
    std = {"q": (d * kv) ** -0.5, "k": d**-0.5, "v": d**-0.5, "o": (h * kv) ** -0.5,
           "wi": d**-0.5, "wi_0": d**-0.5, "wi_1": d**-0.5, "wo": ff**-0.5,
           "embeddings": d**-0.5, "shared": 1.0, "lm_head": 1.0}
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    new = []
    for key, (name, value) in zip(keys, params):
        owner = name.split(".")[-2]
        if owner not in std:  # norms
            new.append((name, mx.ones_like(value)))
        else:
            new.append((name, mx.random.normal(value.shape, key=key) * std[owner]))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())
    model.eval()
    return model


_DTYPE_NAMES = {mx.float32: "float32", mx.bfloat16: "bfloat16", mx.float16: "float16"}


def save_safetensors(path: str | Path, arrays: dict[str, mx.array], metadata: dict[str, str] | None = None) -> None:
    """``mx.save_safetensors``, with a failed write raised as the OSError it is.

    MLX reports a failed write as ``RuntimeError("[write] Unable to write ...")``; a full disk then
    becomes ``OSError(ENOSPC)`` naming the file, so callers can say "disk full" in one line.
    """
    try:
        mx.save_safetensors(str(path), arrays, metadata=metadata)
    except RuntimeError as error:
        if "Unable to write" not in str(error):
            raise
        needed = sum(a.nbytes for a in arrays.values())
        full = shutil.disk_usage(Path(path).parent).free < needed
        raise OSError(errno.ENOSPC if full else errno.EIO, "cannot write the weights", str(path)) from None


# The marker of a folder save_student wrote: it replaces only such a folder (or an unmarked T5 one).
STUDENT_KIND = "mlx-distill student"


def _is_t5_folder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in T5_MODEL_TYPES


def save_student(model: Model, tokenizer, out_dir: str | Path) -> Path:
    """Write the model in the Hugging Face layout, atomically (temp folder, then rename).

    The folder holds config.json (v4 style), model.safetensors (Hugging Face tensor names),
    the tokenizer files and generation_config.json, so that
    ``transformers.T5ForConditionalGeneration.from_pretrained(out_dir)`` loads it. A quantized
    model (``quantize_student``) is written with MLX's packed weights instead, which only
    ``load_student`` reads (not transformers, not mlx-lm).

    An existing ``out_dir`` is replaced only when it is a student folder (one this wrote, or a T5
    checkpoint); any other folder or file there is left alone.

    Returns:
        The output folder.

    Raises:
        DistillError: ``out_dir`` is taken by something that is not a student folder.
    """
    out = Path(out_dir)
    place = check_publish_target(out, STUDENT_KIND, "the student folder", _is_t5_folder)
    place.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{place.name}.tmp-", dir=place.parent))
    try:
        config = model.args.to_config()
        config["torch_dtype"] = config["dtype"] = _DTYPE_NAMES.get(model.dtype, "float32")
        quantization = quantization_of(model)
        if quantization is not None:
            # mlx-lm's keys; "quantization_config" is what the hub reads to label a quantized model.
            config["quantization"] = config["quantization_config"] = quantization
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        generation = {
            "decoder_start_token_id": model.args.decoder_start_token_id,
            "eos_token_id": model.args.eos_token_id,
            "pad_token_id": model.args.pad_token_id,
        }
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        weights = model.export_weights()
        save_safetensors(tmp / "model.safetensors", weights, metadata={"format": "pt" if quantization is None else "mlx"})
        tokenizer.save_pretrained(str(tmp))
        publish_dir(tmp, out, kind=STUDENT_KIND, what="the student folder", accept=_is_t5_folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def count_parameters(model: Model) -> int:
    """The number of parameters, counted by mlx-lm (a quantized weight counts its full size)."""
    from mlx_lm.utils import get_total_parameters  # mlx_lm imports transformers (~2 s)

    return get_total_parameters(model)


# ---------------------------------------------------------------------------------------------
# Quantization (MLX affine; tensors named as mlx-lm names them)

QUANTIZE_BITS = (4, 8)
GROUP_SIZES = (64, 32)


def _quantizable(path: str, module: nn.Module, group_size: int) -> bool:
    # The relative position bias tables are tiny and feed every attention score: kept in float.
    return (hasattr(module, "to_quantized") and "relative_attention_bias" not in path
            and module.weight.shape[-1] % group_size == 0)


def default_group_size(model: Model) -> int:
    """The largest of ``GROUP_SIZES`` that divides the width of every layer quantization would touch."""
    widths = {m.weight.shape[-1] for p, m in model.named_modules()
              if hasattr(m, "to_quantized") and "relative_attention_bias" not in p}
    for size in GROUP_SIZES:
        if all(width % size == 0 for width in widths):
            return size
    return GROUP_SIZES[-1]


def quantize_student(model: Model, bits: int, group_size: int | None = None) -> dict[str, Any]:
    """Quantize the student in place with MLX's affine quantization, as ``mlx_lm.convert -q`` does.

    Linear layers and the token embedding (``shared``, also the tied head) are quantized; norms
    and the relative position bias tables stay in float, as does a layer whose input width is not
    a multiple of ``group_size``.

    Args:
        model: A float student (not already quantized).
        bits: Bits per weight, one of ``QUANTIZE_BITS``.
        group_size: Weights sharing one scale and bias, one of ``GROUP_SIZES``.
            Default: ``default_group_size(model)``.

    Returns:
        The ``quantization`` entry of config.json: ``{"group_size", "bits", "mode"}``.

    Raises:
        DistillError: bits or group size not supported, or the model is already quantized.
    """
    if bits not in QUANTIZE_BITS:
        raise DistillError(f"cannot quantize to {bits} bits; use one of {', '.join(map(str, QUANTIZE_BITS))}")
    if group_size is None:
        group_size = default_group_size(model)
    if group_size not in GROUP_SIZES:
        raise DistillError(f"group size {group_size} is not supported; use one of "
                           f"{', '.join(map(str, GROUP_SIZES))}")
    if quantization_of(model) is not None:
        raise DistillError("the student is already quantized; quantize its float export instead")
    nn.quantize(model, group_size, bits, mode="affine",
                class_predicate=lambda path, module: _quantizable(path, module, group_size))
    mx.eval(model.parameters())
    return {"group_size": group_size, "bits": bits, "mode": "affine"}


def quantization_of(model: Model) -> dict[str, Any] | None:
    """``{"group_size", "bits", "mode"}`` of a quantized student, or None for a float one."""
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            return {"group_size": module.group_size, "bits": module.bits, "mode": module.mode}
    return None


def _quantize_like_checkpoint(model: Model, quantization: Any, weights: dict[str, mx.array], folder: Path) -> None:
    """Turn the layers the checkpoint stores quantized into quantized layers before loading, as
    mlx-lm's ``load_model`` does (a layer is quantized where the checkpoint holds its ``scales``)."""
    try:
        group_size, bits = int(quantization["group_size"]), int(quantization["bits"])
        mode = str(quantization.get("mode", "affine"))
    except (TypeError, KeyError, ValueError):
        raise DistillError(f"{folder / 'config.json'} has an unreadable \"quantization\" entry "
                           f"({quantization!r}); re-export the student") from None

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if isinstance(quantization.get(path), dict):  # mlx-lm's per-layer settings
            return quantization[path]
        return hasattr(module, "to_quantized") and f"{path}.scales" in weights

    try:
        nn.quantize(model, group_size, bits, mode=mode, class_predicate=predicate)
    except ValueError as e:
        raise DistillError(f"cannot rebuild the quantized student in {folder} ({e}); re-export it") from None
