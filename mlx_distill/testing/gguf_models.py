"""Tiny GGUF models written with the `gguf` package, in llama.cpp's tensor names and layouts, with a
small byte-level tokenizer and a chat template: what the GGUF parity tests convert and compare
against transformers' GGUF loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from mlx_distill.teacher.gguf import read_gguf_header

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Types the gguf package can write from float32; the others get random blocks with sane scales.
_QUANTIZABLE = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16", "F32"}


def _byte_tokens() -> list[str]:
    # GPT-2's printable stand-ins for the 256 bytes (what a byte-level BPE vocabulary holds).
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # transformers imports slowly

    return list(bytes_to_unicode().values())


def _f16_bytes(rng: np.random.Generator, count: int, scale: float) -> np.ndarray:
    return (rng.uniform(0.5, 1.0, count) * scale).astype(np.float16).view(np.uint8).reshape(count, 2)


def random_blocks(kind: str, rows: int, columns: int, rng: np.random.Generator, scale: float = 0.02) -> np.ndarray:
    """Random valid blocks of ``kind`` (scales set to sane float16 values), (rows, bytes per row)."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    count = rows * columns // block
    blocks = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
    # Scales so that the weights come out about ``scale`` in size (the largest code times the scale).
    if kind in ("Q4_K", "Q5_K"):
        blocks[:, 0:2] = _f16_bytes(rng, count, scale / 500)
        blocks[:, 2:4] = _f16_bytes(rng, count, scale / 500)
    elif kind == "Q2_K":
        blocks[:, 80:82] = _f16_bytes(rng, count, scale / 20)
        blocks[:, 82:84] = _f16_bytes(rng, count, scale / 20)
    elif kind in ("Q3_K", "Q6_K"):
        blocks[:, size - 2:] = _f16_bytes(rng, count, scale / 64 if kind == "Q3_K" else scale / 2000)
    elif kind in ("TQ1_0", "TQ2_0"):
        blocks[:, size - 2:] = _f16_bytes(rng, count, scale)
    elif kind == "MXFP4":
        blocks[:, 0] = rng.integers(118, 124, count)  # the block's power of two (e8m0)
    elif kind not in ("IQ1_M", "NVFP4"):
        blocks[:, 0:2] = _f16_bytes(rng, count, scale / 8)
        if kind in ("Q4_1", "Q5_1"):
            blocks[:, 2:4] = _f16_bytes(rng, count, -scale)
    return blocks.reshape(rows, -1)


def q6k_blocks_with_paired_scales(rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """Q6_K blocks whose 16-wide sub-blocks share their scale in pairs (exact as 6-bit groups of 32)."""
    raw = random_blocks("Q6_K", rows, columns, rng).reshape(-1, 210)
    raw[:, 193:208:2] = raw[:, 192:207:2]
    return raw.reshape(rows, -1)


def write_tiny_gguf(path: Path, arch: str = "llama", kind: str = "F32", *, hidden: int = 256, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, ffn: int = 512, head_dim: int | None = None, seed: int = 0,
                    tied: bool = False,
                    extra_metadata: dict | None = None, kinds: dict[str, str] | None = None,
                    extra_tensors: dict[str, np.ndarray] | None = None) -> Path:
    """A small ``arch`` model whose 2-D weights are stored as ``kind`` (norms in F32), or as
    ``kinds[name]`` for the tensors named there."""
    rng = np.random.default_rng(seed)
    if arch == "gemma3":
        tokens = ["<unk>", "<pad>", "<bos>"] + [f"<0x{byte:02X}>" for byte in range(256)] + [
            "▁", "▁t", "h", "e", "l", "o", "r", "▁h", "<|im_start|>", "<|im_end|>"]
    else:
        tokens = _byte_tokens() + ["Ġt", "he", "th", "<|im_start|>", "<|im_end|>"]
    vocab = len(tokens)
    head_dim = head_dim or hidden // heads
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    if arch in ("qwen3", "gemma3"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(8)
    if arch == "gemma3":  # Gemma's GGUFs hold a sentencepiece vocabulary
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * 3 + [-float(i) for i in range(vocab - 3)])
        writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 261) + [3, 3])
        writer.add_unk_token_id(0)
        writer.add_pad_token_id(0)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types([1] * (vocab - 2) + [3, 3])
        writer.add_token_merges(["Ġ t", "h e", "t h"])
        writer.add_pad_token_id(vocab - 1)
    writer.add_bos_token_id(vocab - 2)
    writer.add_eos_token_id(vocab - 1)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for key, value in (extra_metadata or {}).items():
        if isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)

    def matrix(rows: int, columns: int) -> tuple[int, int]:
        return rows, columns  # made when written, in the type it is stored as

    def norm(size: int) -> np.ndarray:
        # Gemma's GGUF stores 1 + weight; the others the weight itself.
        return (1.0 + rng.normal(0, 0.1, size)).astype(np.float32)

    tensors: dict[str, np.ndarray | tuple[int, int]] = {"token_embd.weight": matrix(vocab, hidden),
                                                         "output_norm.weight": norm(hidden)}
    if not tied:
        tensors["output.weight"] = matrix(vocab, hidden)
    for i in range(layers):
        block = f"blk.{i}"
        tensors[f"{block}.attn_norm.weight"] = norm(hidden)
        tensors[f"{block}.ffn_norm.weight"] = norm(hidden)
        tensors[f"{block}.attn_output.weight"] = matrix(hidden, heads * head_dim)
        tensors[f"{block}.ffn_down.weight"] = matrix(hidden, ffn)
        if arch == "phi3":
            tensors[f"{block}.attn_qkv.weight"] = matrix((heads + 2 * kv_heads) * head_dim, hidden)
            tensors[f"{block}.ffn_up.weight"] = matrix(2 * ffn, hidden)
        else:
            tensors[f"{block}.attn_q.weight"] = matrix(heads * head_dim, hidden)
            tensors[f"{block}.attn_k.weight"] = matrix(kv_heads * head_dim, hidden)
            tensors[f"{block}.attn_v.weight"] = matrix(kv_heads * head_dim, hidden)
            tensors[f"{block}.ffn_gate.weight"] = matrix(ffn, hidden)
            tensors[f"{block}.ffn_up.weight"] = matrix(ffn, hidden)
        if arch == "qwen2":
            for name, rows in (("attn_q", heads), ("attn_k", kv_heads), ("attn_v", kv_heads)):
                tensors[f"{block}.{name}.bias"] = rng.normal(0, 0.02, rows * head_dim).astype(np.float32)
        if arch in ("qwen3", "gemma3"):
            tensors[f"{block}.attn_q_norm.weight"] = norm(head_dim)
            tensors[f"{block}.attn_k_norm.weight"] = norm(head_dim)
        if arch == "gemma3":
            tensors[f"{block}.post_attention_norm.weight"] = norm(hidden)
            tensors[f"{block}.post_ffw_norm.weight"] = norm(hidden)
    tensors.update(extra_tensors or {})
    for name, array in tensors.items():
        stored = (kinds or {}).get(name, kind)
        if isinstance(array, tuple):
            rows, columns = array
            if stored in _QUANTIZABLE:
                data = quantize(rng.normal(0, 0.02, array).astype(np.float32), GGMLQuantizationType[stored])
            else:
                data = random_blocks(stored, rows, columns, rng)
            writer.add_tensor(name, data, raw_dtype=GGMLQuantizationType[stored])
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_MEASURE = """
import json, resource, sys, time
from pathlib import Path
import transformers.models.auto.tokenization_auto  # what the conversion imports, in the baseline
from mlx_distill.teacher.gguf import convert_gguf

def peak_bytes():
    # Linux: the high-water mark of this address space (ru_maxrss would carry the parent's RSS
    # at fork); elsewhere ru_maxrss (bytes on macOS).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

baseline = peak_bytes()
start = time.perf_counter()
convert_gguf(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
peak = peak_bytes()
output = sum(f.stat().st_size for f in Path(sys.argv[2]).glob("*.safetensors"))
print(json.dumps({"baseline": baseline, "peak": peak, "output": output, "seconds": seconds}))
"""


def measure_conversion(gguf: Path, out: Path) -> dict:
    """Convert ``gguf`` into ``out`` in a fresh process: its peak resident memory (VmHWM on Linux,
    ``ru_maxrss`` elsewhere) before (the baseline: Python, MLX, transformers imported) and after the conversion, the
    output's size and the time taken, in bytes and seconds."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(gguf), str(out)], capture_output=True, text=True,
                            check=True, timeout=3600)
    return json.loads(result.stdout.strip().splitlines()[-1])


def largest_tensor_float32_bytes(gguf: Path) -> int:
    """The largest tensor of a GGUF file as float32 (what one tensor in flight may take)."""
    return max(tensor.elements * 4 for tensor in read_gguf_header(gguf).tensors)
