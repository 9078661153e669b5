"""Tiny random T5 checkpoints in the real Hugging Face on-disk format (for tests and the demo).

The folder holds what a hub checkpoint holds: ``config.json`` as the hub writes it for the
original T5 (relu, head tied to ``shared``) or T5 v1.1/FLAN (gated-gelu, separate ``lm_head``),
``model.safetensors`` with v4 tensor names (including the tied ``embed_tokens`` copies), and a
sentencepiece ``spiece.model`` trained here with T5's special ids (pad=0, eos=1, unk=2) plus
``<extra_id_*>`` tokens, saved through transformers so ``tokenizer.json`` is there too.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from mlx_distill.errors import DistillError

VARIANTS = ("v1.1", "original")

# Used when no corpus is given: enough distinct words for a few hundred pieces.
_DEFAULT_CORPUS = """\
The quick brown fox jumps over the lazy dog near the river bank.
A man has 3 apples and buys 5 more, so he has 8 apples in total.
If a train travels 60 miles in 2 hours, its speed is 30 miles per hour.
Where would you put a plate after washing it? In the cupboard, of course.
The premise says a woman is reading a book; the hypothesis says she is asleep.
predict: What is 12 plus 7? explain: 12 + 7 = 19 because adding seven to twelve gives nineteen.
Answer the question with one of the choices: kitchen, garden, office, school, library.
entailment neutral contradiction yes no true false maybe answer question choice reason
zero one two three four five six seven eight nine ten eleven twelve hundred thousand
0 1 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 100 + - * / = ( ) . , ? ! : ; ' "
Students learn from teachers who explain their reasoning step by step.
She gave half of her 24 stickers to her brother and kept the rest for herself.
""".splitlines()


def _train_sentencepiece(corpus: list[str], vocab_size: int, seed: int) -> bytes:
    import sentencepiece as spm  # its trainer is needed only to build a tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _config(variant: str, vocab_size: int, d_model: int, d_kv: int, d_ff: int, num_heads: int,
            num_layers: int, num_decoder_layers: int, relative_attention_num_buckets: int,
            relative_attention_max_distance: int, dropout_rate: float) -> dict:
    config = {
        "architectures": ["T5ForConditionalGeneration"],
        "d_ff": d_ff,
        "d_kv": d_kv,
        "d_model": d_model,
        "decoder_start_token_id": 0,
        "dropout_rate": dropout_rate,
        "eos_token_id": 1,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "num_decoder_layers": num_decoder_layers,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "pad_token_id": 0,
        "relative_attention_max_distance": relative_attention_max_distance,
        "relative_attention_num_buckets": relative_attention_num_buckets,
        "vocab_size": vocab_size,
    }
    if variant == "original":
        # As t5-small's config.json: relu, no tie_word_embeddings key (v4 default: tied + scaled).
        config.update({"feed_forward_proj": "relu", "n_positions": 512, "output_past": True})
    else:
        # As google/flan-t5-small's config.json.
        config.update({
            "dense_act_fn": "gelu_new",
            "feed_forward_proj": "gated-gelu",
            "is_gated_act": True,
            "n_positions": 512,
            "output_past": True,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.23.1",
            "use_cache": True,
        })
    return dict(sorted(config.items()))


def _random_weights(config: dict, variant: str, seed: int) -> dict[str, np.ndarray]:
    """Weights with v4 hub names, initialised as transformers' T5 `_init_weights` does."""
    rng = np.random.default_rng(seed)
    d, kv, h, ff, v = config["d_model"], config["d_kv"], config["num_heads"], config["d_ff"], config["vocab_size"]
    inner = kv * h

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = {"shared.weight": normal((v, d), 1.0)}
    for stack, depth in (("encoder", config["num_layers"]), ("decoder", config["num_decoder_layers"])):
        for i in range(depth):
            p = f"{stack}.block.{i}.layer"
            attentions = [f"{p}.0.SelfAttention"] + ([f"{p}.1.EncDecAttention"] if stack == "decoder" else [])
            for a in attentions:
                w[f"{a}.q.weight"] = normal((inner, d), (d * kv) ** -0.5)
                w[f"{a}.k.weight"] = normal((inner, d), d**-0.5)
                w[f"{a}.v.weight"] = normal((inner, d), d**-0.5)
                w[f"{a}.o.weight"] = normal((d, inner), inner**-0.5)
            ff_index = 2 if stack == "decoder" else 1
            mlp = f"{p}.{ff_index}.DenseReluDense"
            for wi in (("wi_0", "wi_1") if variant == "v1.1" else ("wi",)):
                w[f"{mlp}.{wi}.weight"] = normal((ff, d), d**-0.5)
            w[f"{mlp}.wo.weight"] = normal((d, ff), ff**-0.5)
            # Norm weights are ones at init; random ones here so the parity tests see them.
            for j in range(ff_index + 1):
                w[f"{p}.{j}.layer_norm.weight"] = (1.0 + normal((d,), 0.1)).astype(np.float32)
        bias_name = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        w[bias_name] = normal((config["relative_attention_num_buckets"], h), d**-0.5)
        w[f"{stack}.final_layer_norm.weight"] = (1.0 + normal((d,), 0.1)).astype(np.float32)
        # v4 checkpoints store the tied embedding copies as well.
        w[f"{stack}.embed_tokens.weight"] = w["shared.weight"]
    if variant == "v1.1":
        w["lm_head.weight"] = normal((v, d), 1.0)
    return w


def build_tiny_t5(
    out_dir: str | Path,
    corpus: list[str] | None = None,
    variant: str = "v1.1",
    vocab_size: int = 200,
    d_model: int = 32,
    d_kv: int = 12,
    d_ff: int = 64,
    num_heads: int = 4,
    num_layers: int = 2,
    num_decoder_layers: int = 3,
    relative_attention_num_buckets: int = 32,
    relative_attention_max_distance: int = 128,
    dropout_rate: float = 0.1,
    extra_ids: int = 8,
    seed: int = 0,
) -> Path:
    """Write a tiny random T5 checkpoint in the Hugging Face layout and return its folder.

    Args:
        out_dir: Folder to write (created; existing files are overwritten).
        corpus: Lines the sentencepiece model is trained on. Default: a small built-in text.
        variant: ``"v1.1"`` (gated-gelu, separate lm_head, as FLAN-T5) or ``"original"``
            (relu, head tied to the embedding and scaled, as t5-small).
        vocab_size: Sentencepiece pieces to aim for (fewer if the corpus is small); the model's
            vocabulary is the pieces plus ``extra_ids`` sentinel tokens.
        d_model, d_kv, d_ff, num_heads, num_layers, num_decoder_layers,
        relative_attention_num_buckets, relative_attention_max_distance, dropout_rate:
            The T5 config values of the same names.
        extra_ids: Number of ``<extra_id_N>`` tokens.
        seed: Seed for the weights and the tokenizer trainer.

    Returns:
        The checkpoint folder.
    """
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer  # transformers takes seconds to import

    if variant not in VARIANTS:
        raise DistillError(f"unknown tiny T5 variant {variant!r}; use one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (corpus if corpus is not None else _DEFAULT_CORPUS) if line.strip()]
    if not lines:
        raise DistillError("the corpus for the tiny T5 tokenizer is empty; pass some text lines")
    spiece = out / "spiece.model"
    spiece.write_bytes(_train_sentencepiece(lines, vocab_size, seed))
    # Like a hub checkpoint that only ships spiece.model; transformers converts it and the
    # save adds tokenizer.json so later loads are fast.
    for stale in ("tokenizer.json", "special_tokens_map.json", "added_tokens.json"):
        (out / stale).unlink(missing_ok=True)
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": extra_ids, "eos_token": "</s>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": 512}, indent=2) + "\n"
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.save_pretrained(out)

    config = _config(variant, len(tokenizer), d_model, d_kv, d_ff, num_heads, num_layers, num_decoder_layers,
                     relative_attention_num_buckets, relative_attention_max_distance, dropout_rate)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}, indent=2) + "\n"
    )
    save_file(_random_weights(config, variant, seed), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
