"""A tiny random decoder LLM (llama or qwen2) in the Hugging Face on-disk layout.

Tests and the offline demo use it as a stand-in teacher: ``mlx_lm.load(out_dir)`` loads it like a
hub checkpoint (config.json, model.safetensors, tokenizer.json + tokenizer_config.json with a
ChatML chat template, generation_config.json). Its weights are random, so its text is noise, but
every code path (chat template, EOS, batching, caches) is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

# Special tokens of the ChatML template that Qwen-style instruct models use.
END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)

ATTENTION_SCALE = 4.0

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEFAULT_CORPUS = (
    "Q: Jack had 8 pens and gave 3 to Mary. How many pens does Jack have now?",
    "A: Jack started with 8 pens. He gave away 3, so 8 - 3 = 5. So the answer is ( 8.0 - 3.0 ) = 5.",
    "Q: What do people use to absorb extra ink from a fountain pen?\nAnswer Choices:\n(a) shirt pocket"
    "\n(b) calligrapher's hand\n(c) inkwell\n(d) desk drawer\n(e) blotter",
    "A: The answer must be an item that can absorb ink. Of the above choices, only blotters are used to "
    "absorb ink. So the answer is (e) blotter.",
    "Premise: A man is playing a guitar on stage.\nHypothesis: A man is performing music.",
    "A: Playing a guitar on stage is performing music. So the answer is entailment.",
    "A: The premise does not say whether the man is famous. So the answer is neutral.",
    "A: A man cannot sleep while playing a guitar. So the answer is contradiction.",
    "The quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) . , ? !",
)


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _pad_vocab(tokenizer, size: int):
    """Add never-merged filler tokens up to ``size`` ids, so a model with a real-size vocabulary
    (e.g. Qwen2.5's 151936) can emit any id and every id still decodes."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    taken = len(vocab) + len(data.get("added_tokens", []))
    for index in range(max(0, size - taken)):
        vocab[f"~{index}"] = len(vocab) + len(data.get("added_tokens", []))
    return Tokenizer.from_str(json.dumps(data))


def _model_config(arch: str, vocab_size: int, eos_id: int, bos_id: int) -> dict:
    common = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }
    if arch == "llama":
        return {**common, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "attention_bias": False, "mlp_bias": False, "head_dim": 16}
    if arch == "qwen2":
        return {**common, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
                "use_sliding_window": False, "sliding_window": 2048, "max_window_layers": 2}
    raise ValueError(f"unknown tiny LLM arch {arch!r}; use 'llama' or 'qwen2'")


def _random_weights(config: dict, seed: int) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    mx.random.seed(seed)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    # Wide embeddings and output head make the logits peaked and varied: greedy picks are then
    # not near-ties that batch padding could flip, and the text does not collapse to one token.
    weights["model.embed_tokens.weight"] = mx.random.normal(
        weights["model.embed_tokens.weight"].shape, scale=1.0
    )
    if "lm_head.weight" in weights:
        weights["lm_head.weight"] = mx.random.normal(weights["lm_head.weight"].shape, scale=0.3)
    # Sharper attention that carries more of what it reads, so the next token depends on the
    # question and not only on the prompt's fixed last tokens (the chat template's tail).
    for name in weights:
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")):
            weights[name] = weights[name] * ATTENTION_SCALE
    return {k: v.astype(mx.float32) for k, v in weights.items()}


def build_tiny_llm(
    out_dir: str | Path,
    arch: str = "llama",
    corpus: list[str] | None = None,
    seed: int = 0,
    vocab_size: int = 512,
    shape: dict | None = None,
) -> Path:
    """Write a tiny random llama or qwen2 checkpoint in the Hugging Face layout.

    Args:
        out_dir: Folder to write (created; existing files are overwritten).
        arch: ``"llama"`` or ``"qwen2"`` (real mlx-lm architectures).
        corpus: Texts to train the byte-level BPE tokenizer on. Default: a few task-like lines.
        seed: Seed for the random weights.
        vocab_size: Target tokenizer size (byte alphabet + merges + 3 special tokens).
        shape: config.json overrides for a bigger random model, e.g. Qwen2.5-0.5B's
            ``{"hidden_size": 896, "num_hidden_layers": 24, ..., "vocab_size": 151936}``; a
            ``vocab_size`` above the trained tokenizer's is filled with filler tokens.

    Returns:
        The folder, loadable with ``mlx_lm.load``.
    """
    import mlx.core as mx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(list(corpus or DEFAULT_CORPUS), vocab_size)
    if shape and shape.get("vocab_size", 0) > tokenizer.get_vocab_size():
        tokenizer = _pad_vocab(tokenizer, shape["vocab_size"])
    tokenizer.save(str(out / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(IM_END)
    bos_id = tokenizer.token_to_id(END_OF_TEXT)

    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "add_bos_token": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
        "additional_special_tokens": [IM_START, IM_END],
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "eos_token": IM_END, "pad_token": END_OF_TEXT,
        "additional_special_tokens": [IM_START, IM_END],
    }, indent=2))

    config = {**_model_config(arch, tokenizer.get_vocab_size(), eos_id, bos_id), **(shape or {})}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos_id, "eos_token_id": [eos_id, bos_id], "do_sample": False}, indent=2))

    weights = _random_weights(config, seed)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    return out
