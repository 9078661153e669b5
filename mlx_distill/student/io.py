"""The T5 student: load and save in the Hugging Face layout, create, and generate text.

``load_student`` reads a local folder or a hub id (safetensors, sharded safetensors, or
``pytorch_model.bin`` through an optional torch). ``generate`` runs batched greedy decoding,
sampling or beam search with a static KV cache and a compiled decoding step;
``stream_generate`` yields one ``StudentResponse`` per token for chat.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_distill.errors import DistillError
from mlx_distill.student.t5 import T5_MODEL_TYPES, DecoderCache, Model, ModelArgs

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
# Encoder lengths are padded to a multiple of this so the compiled decoding step is reused.
_LENGTH_BUCKET = 8


def parse_dtype(dtype: str) -> mx.Dtype:
    """The MLX dtype for a name in DTYPES; DistillError for anything else."""
    if dtype not in DTYPES:
        raise DistillError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------
# Loading


def _download(repo_id: str, patterns: list[str]) -> Path:
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DistillError(f"{config_path} is not valid JSON ({e}); re-download or re-export the model") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in T5_MODEL_TYPES:
        found = f"a {architectures[0]} model" if architectures else "a model of unknown architecture"
        raise DistillError(
            f"{folder} holds {found} (model_type {model_type!r}), not a T5; the student must be "
            "a T5ForConditionalGeneration checkpoint such as google/flan-t5-small"
        )
    return config


def _load_torch_bin(files: list[Path]) -> dict[str, mx.array]:
    try:
        import torch
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
        try:
            weights.update(mx.load(str(file)))
        except (RuntimeError, ValueError, OSError) as e:
            raise DistillError(f"cannot read {file} ({e}); the file is corrupt or truncated, re-download it") from None
    return weights


def _load_weights(folder: Path) -> dict[str, mx.array]:
    for index_name, loader in (("model.safetensors.index.json", _load_safetensors),
                               ("pytorch_model.bin.index.json", _load_torch_bin)):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as e:
                raise DistillError(f"{index} is not a valid weight index ({e}); re-download the model") from None
            return loader([folder / s for s in shards])
    single = sorted(folder.glob("*.safetensors"))
    if single:
        return _load_safetensors(single)
    if (folder / "pytorch_model.bin").is_file():
        return _load_torch_bin([folder / "pytorch_model.bin"])
    raise DistillError(
        f"no weights in {folder} (expected model.safetensors, sharded safetensors with "
        "model.safetensors.index.json, or pytorch_model.bin)"
    )


def _has_separate_head(weights: dict[str, mx.array]) -> bool:
    head, shared = weights.get("lm_head.weight"), weights.get("shared.weight")
    if head is None:
        return False
    return shared is None or head.shape != shared.shape or not mx.array_equal(head, shared).item()


def load_tokenizer(folder: str | Path):
    """The transformers tokenizer saved in a checkpoint folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise DistillError(
            f"cannot load the tokenizer in {folder} ({e}); the folder needs spiece.model or tokenizer.json"
        ) from None


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
    weights = _load_weights(folder)
    if "shared.weight" not in weights and "encoder.embed_tokens.weight" in weights:
        weights["shared.weight"] = weights["encoder.embed_tokens.weight"]
    try:
        args = ModelArgs.from_dict(config)
    except (TypeError, ValueError) as e:
        raise DistillError(f"{folder / 'config.json'} is not a usable T5 config ({e})") from None
    args.separate_lm_head = _has_separate_head(weights)
    model = Model(args)
    try:
        model.load_weights(list(model.sanitize(weights).items()), strict=True)
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


def save_student(model: Model, tokenizer, out_dir: str | Path) -> Path:
    """Write the model in the Hugging Face layout, atomically (temp folder, then rename).

    The folder holds config.json (v4 style), model.safetensors (Hugging Face tensor names),
    the tokenizer files and generation_config.json, so that
    ``transformers.T5ForConditionalGeneration.from_pretrained(out_dir)`` loads it.

    Returns:
        The output folder.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        config = model.args.to_config()
        config["torch_dtype"] = config["dtype"] = _DTYPE_NAMES.get(model.dtype, "float32")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        generation = {
            "decoder_start_token_id": model.args.decoder_start_token_id,
            "eos_token_id": model.args.eos_token_id,
            "pad_token_id": model.args.pad_token_id,
        }
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        weights = model.export_weights()
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass
class StudentResponse:
    """One generated token as `stream_generate` yields it."""

    text: str  # the new piece of text (may be "" while a word is incomplete, and for EOS)
    token: int
    generated_tokens: int
    tokens_per_second: float
    finish_reason: str | None  # None, "stop" (EOS) or "length"


def _encode_prompts(tokenizer, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    longest = max(len(x) for x in ids)
    width = -(-longest // _LENGTH_BUCKET) * _LENGTH_BUCKET
    input_ids = np.zeros((len(ids), width), dtype=np.int32)
    mask = np.zeros((len(ids), width), dtype=np.int32)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return input_ids, mask


def _decode_step_fn(model: Model):
    """The compiled one-token decoding step of `model` (weights are read at call time)."""
    fn = getattr(model, "_compiled_decode_step", None)
    if fn is None:

        def step(tokens, mask, state):
            cache = DecoderCache.from_state(state, max_length=state[0][0].shape[2])
            logits = model.decode(tokens, None, mask, cache)[:, -1, :]
            return logits, cache.state

        fn = mx.compile(step, inputs=model.state)
        model._compiled_decode_step = fn
    return fn


def _pick(logits: mx.array, temperature: float, top_p: float) -> mx.array:
    if temperature <= 0:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    logits = logits / temperature
    if top_p < 1.0:
        order = mx.argsort(-logits, axis=-1)
        sorted_logits = mx.take_along_axis(logits, order, axis=-1)
        probs = mx.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = (mx.cumsum(probs, axis=-1) - probs) < top_p
        choice = mx.random.categorical(mx.where(keep, sorted_logits, -mx.inf))
        return mx.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(mx.int32)
    return mx.random.categorical(logits).astype(mx.int32)


class _Decoder:
    """Encoder output, cross K/V and the static self-attention cache for one batch."""

    def __init__(self, model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int, repeat: int = 1):
        self.model = model
        ids, self.mask = mx.array(input_ids), mx.array(mask)
        encoder_hidden = model.encode(ids, self.mask)
        if repeat > 1:
            encoder_hidden = mx.repeat(encoder_hidden, repeat, axis=0)
            self.mask = mx.repeat(self.mask, repeat, axis=0)
        self.encoder_hidden = encoder_hidden
        self.cache = model.make_cache(max_length=max_tokens)
        self.step = _decode_step_fn(model)

    def __call__(self, tokens: mx.array) -> mx.array:
        """Last-position logits (B, V) for one new token per row."""
        if self.cache.keys[0] is None:
            # First step runs eagerly: it fills the cross K/V and allocates the buffers.
            return self.model.decode(tokens, self.encoder_hidden, self.mask, self.cache)[:, -1, :]
        logits, state = self.step(tokens, self.mask, self.cache.state)
        self.cache = DecoderCache.from_state(state, self.cache.max_length)
        return logits


def _sample_tokens(model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int,
                   temperature: float, top_p: float) -> Iterator[np.ndarray]:
    """Yield the next token of every row (pad after a row's EOS) until all rows end."""
    args = model.args
    decoder = _Decoder(model, input_ids, mask, max_tokens)
    batch = input_ids.shape[0]
    finished = mx.zeros((batch,), dtype=mx.bool_)
    tokens = mx.full((batch,), args.decoder_start_token_id, dtype=mx.int32)

    def advance(tokens, finished):
        y = _pick(decoder(tokens[:, None]), temperature, top_p)
        y = mx.where(finished, args.pad_token_id, y)
        return y, finished | (y == args.eos_token_id)

    y, finished = advance(tokens, finished)
    mx.async_eval(y, finished)
    for i in range(max_tokens):
        if i + 1 < max_tokens:
            # Queue the next step before reading this one, so host and device overlap.
            next_y, next_finished = advance(y, finished)
            mx.async_eval(next_y, next_finished)
        yield np.array(y)
        if finished.all().item() or i + 1 == max_tokens:
            return
        y, finished = next_y, next_finished


def _beam_search(model: Model, input_ids: np.ndarray, mask: np.ndarray, max_tokens: int, num_beams: int,
                 length_penalty: float = 1.0, early_stopping: bool | str = False) -> list[list[int]]:
    """Beam search with the same rules and defaults as transformers' `_beam_search`."""
    args = model.args
    eos = args.eos_token_id
    batch, nb = input_ids.shape[0], num_beams
    max_length = 1 + max_tokens  # the decoder start token counts, as in transformers
    keep = 2 * nb
    decoder = _Decoder(model, input_ids, mask, max_tokens, repeat=nb)
    fill = args.pad_token_id or eos
    running = np.full((batch, nb, max_length), fill, dtype=np.int64)
    running[:, :, 0] = args.decoder_start_token_id
    sequences = running.copy()
    running_scores = np.zeros((batch, nb), dtype=np.float32)
    running_scores[:, 1:] = -1e9
    scores = np.full((batch, nb), -1e9, dtype=np.float32)
    finished = np.zeros((batch, nb), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    top_nb = np.arange(keep) < nb
    cur_len = 1
    tokens = mx.full((batch * nb,), args.decoder_start_token_id, dtype=mx.int32)
    while True:
        logits = decoder(tokens[:, None])
        log_probs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.reshape(batch, nb, vocab) + mx.array(running_scores)[:, :, None]
        log_probs = log_probs.reshape(batch, nb * vocab)
        top = mx.argpartition(-log_probs, kth=keep - 1, axis=-1)[:, :keep]
        top_values = mx.take_along_axis(log_probs, top, axis=-1)
        order = mx.argsort(-top_values, axis=-1)
        top = np.array(mx.take_along_axis(top, order, axis=-1))
        top_lp = np.array(mx.take_along_axis(top_values, order, axis=-1))

        source_beam, token_ids = top // vocab, top % vocab
        cand = np.take_along_axis(running, source_beam[:, :, None], axis=1)
        cand[:, :, cur_len] = token_ids
        hits = (token_ids == eos) | (cur_len + 1 >= max_length)

        # Next running beams: the best candidates that did not just finish.
        alive_lp = top_lp + hits.astype(np.float32) * -1.0e9
        next_idx = np.argsort(-alive_lp, axis=-1, kind="stable")[:, :nb]
        running = np.take_along_axis(cand, next_idx[:, :, None], axis=1)
        running_scores = np.take_along_axis(alive_lp, next_idx, axis=1)
        running_source = np.take_along_axis(source_beam, next_idx, axis=1)

        # Finished hypotheses: merge the ones that just ended into the kept best `nb`.
        just_done = hits & top_nb[None, :]
        done_lp = top_lp / np.float32((cur_len + 1 - 1) ** length_penalty)
        full = np.all(finished, axis=-1, keepdims=True) & (early_stopping is True)
        done_lp = done_lp + full * np.float32(-1.0e9) + (~improvable) * np.float32(-1.0e9)
        done_lp = done_lp + (~just_done) * np.float32(-1.0e9)
        merged_seq = np.concatenate([sequences, cand], axis=1)
        merged_scores = np.concatenate([scores, done_lp.astype(np.float32)], axis=1)
        merged_finished = np.concatenate([finished, just_done], axis=1)
        best = np.argsort(-merged_scores, axis=-1, kind="stable")[:, :nb]
        sequences = np.take_along_axis(merged_seq, best[:, :, None], axis=1)
        scores = np.take_along_axis(merged_scores, best, axis=1)
        finished = np.take_along_axis(merged_finished, best, axis=1)

        flat = (np.arange(batch)[:, None] * nb + running_source).reshape(-1)
        decoder.cache.reorder(mx.array(flat.astype(np.int32)))
        tokens = mx.array(running[:, :, cur_len].reshape(-1).astype(np.int32))
        cur_len += 1

        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - 1
        else:
            best_len = cur_len - 1
        best_running = running_scores[:, :1] / np.float32(best_len**length_penalty)
        worst_done = np.where(finished, np.min(scores, axis=1, keepdims=True), np.float32(-1.0e9))
        improvable = improvable & np.any(best_running > worst_done, axis=-1, keepdims=True)
        open_beam = not (np.all(finished) and early_stopping is True)
        if not (np.any(improvable) and open_beam and not np.all(hits)):
            break
    return [[int(t) for t in sequences[b, 0, 1:]] for b in range(batch)]


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _detokenize(tokenizer, tokens: list[int]) -> str:
    vocab = len(tokenizer)
    return tokenizer.decode([t for t in tokens if t < vocab], skip_special_tokens=True)


def _check_generation_args(max_tokens: int, num_beams: int, temperature: float, top_p: float) -> None:
    if max_tokens < 1:
        raise DistillError(f"max_tokens must be at least 1, got {max_tokens}")
    if num_beams < 1:
        raise DistillError(f"num_beams must be at least 1, got {num_beams}")
    if num_beams > 1 and temperature > 0:
        raise DistillError("beam search with temperature sampling is not supported; use num_beams=1 or temperature=0")
    if not 0.0 < top_p <= 1.0:
        raise DistillError(f"top_p must be in (0, 1], got {top_p}")


class _EvalMode:
    """Run with dropout off, and give the model back in the mode it came in."""

    def __init__(self, model: Model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def generate_tokens(model: Model, tokenizer, prompts: list[str], max_tokens: int = 64, num_beams: int = 1,
                    temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 32) -> list[list[int]]:
    """Token ids generated for each prompt (without the start token, cut before EOS)."""
    _check_generation_args(max_tokens, num_beams, temperature, top_p)
    if not prompts:
        return []
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = _encode_prompts(tokenizer, [prompts[i] for i in rows])
        outputs = generate_batch(model, input_ids, mask, max_tokens, num_beams, temperature, top_p)
        for row, tokens in zip(rows, outputs):
            results[row] = tokens
    return results


def generate_batch(model: Model, input_ids: np.ndarray, attention_mask: np.ndarray, max_tokens: int = 64,
                   num_beams: int = 1, temperature: float = 0.0, top_p: float = 1.0) -> list[list[int]]:
    """Token ids generated for one padded batch of token ids (B x T int arrays, right padding)."""
    _check_generation_args(max_tokens, num_beams, temperature, top_p)
    input_ids, attention_mask = np.asarray(input_ids, dtype=np.int32), np.asarray(attention_mask, dtype=np.int32)
    with _EvalMode(model):
        if num_beams > 1:
            outputs = _beam_search(model, input_ids, attention_mask, max_tokens, num_beams)
        else:
            steps = list(_sample_tokens(model, input_ids, attention_mask, max_tokens, temperature, top_p))
            outputs = np.stack(steps, axis=1).tolist()
    return [_until_eos(tokens, model.args.eos_token_id) for tokens in outputs]


def generate(model: Model, tokenizer, prompts: list[str], max_tokens: int = 64, num_beams: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 32) -> list[str]:
    """Generate an answer for each prompt, in batches.

    Args:
        model: The T5 student.
        tokenizer: Its tokenizer.
        prompts: Input texts (prefixes such as ``predict:`` included by the caller).
        max_tokens: Most new tokens per answer. Default: ``64``.
        num_beams: 1 for greedy/sampling, more for beam search (transformers' rules:
            length_penalty 1.0, early_stopping False). Default: ``1``.
        temperature: 0 for greedy, > 0 to sample. Default: ``0.0``.
        top_p: Nucleus sampling mass when sampling. Default: ``1.0``.
        batch_size: Prompts per batch (prompts are grouped by length). Default: ``32``.

    Returns:
        The generated texts, in the order of `prompts`.
    """
    tokens = generate_tokens(model, tokenizer, prompts, max_tokens, num_beams, temperature, top_p, batch_size)
    return [_detokenize(tokenizer, t) for t in tokens]


def stream_generate(model: Model, tokenizer, prompt: str, max_tokens: int = 256, temperature: float = 0.0,
                    top_p: float = 1.0) -> Iterator[StudentResponse]:
    """Generate for one prompt, yielding a `StudentResponse` per token as soon as it exists.

    The last response has ``finish_reason`` ``"stop"`` (EOS) or ``"length"`` (max_tokens).
    """
    _check_generation_args(max_tokens, 1, temperature, top_p)
    eos = model.args.eos_token_id
    input_ids, mask = _encode_prompts(tokenizer, [prompt])
    tokens: list[int] = []
    text = ""
    start = time.perf_counter()
    with _EvalMode(model):
        for step in _sample_tokens(model, input_ids, mask, max_tokens, temperature, top_p):
            token = int(step[0])
            finish = "stop" if token == eos else ("length" if len(tokens) + 1 == max_tokens else None)
            piece = ""
            if token != eos:
                tokens.append(token)
                new_text = _detokenize(tokenizer, tokens)
                piece, text = new_text[len(text):], new_text
            elapsed = max(time.perf_counter() - start, 1e-9)
            count = len(tokens) + (token == eos)
            yield StudentResponse(piece, token, count, count / elapsed, finish)
            if finish:
                return
