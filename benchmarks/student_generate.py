"""Batched greedy generation speed of the MLX T5 student against transformers' PyTorch T5.

Both run in this process on the same random weights (t5-small and flan-t5-small shapes, built
here, nothing downloaded) and the same token ids; the outputs are checked to be identical and
the ratio of generated tokens per second is printed.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/student_generate.py [--batch-size 32] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration

from mlx_distill.platform import blas_status
from mlx_distill.student import Model, ModelArgs, generate_batch

SHAPES = {
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8, feed_forward_proj="relu"),
    "flan-t5-small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def build_pair(shape: dict, seed: int) -> tuple[T5ForConditionalGeneration, Model]:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=32128, dropout_rate=0.0, decoder_start_token_id=0, **shape)
    torch_model = T5ForConditionalGeneration(config).eval()
    state = {k: mx.array(v.numpy()) for k, v in torch_model.state_dict().items()}
    args = ModelArgs.from_dict({**shape, "vocab_size": 32128})
    args.separate_lm_head = not np.array_equal(state["lm_head.weight"], state["shared.weight"])
    mlx_model = Model(args)
    mlx_model.load_weights(list(mlx_model.sanitize(state).items()), strict=True)
    mx.eval(mlx_model.parameters())
    mlx_model.eval()
    return torch_model, mlx_model


def make_inputs(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(16, 49, size=batch)
    ids = np.zeros((batch, lengths.max()), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, : n - 1] = rng.integers(3, 32000, size=n - 1)
        ids[row, n - 1] = 1
        mask[row, :n] = 1
    return ids, mask


def run_torch(model, ids, mask, max_tokens) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             max_new_tokens=max_tokens, do_sample=False, num_beams=1)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(1)] if 1 in row else row)
    return rows


def timed(fn, repeats: int) -> tuple[float, list]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()

    blas = blas_status()
    print(f"MLX {mx.__version__} on {mx.default_device()} (BLAS: {blas.detail}); torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads")
    print(f"batched greedy generation, batch {args.batch_size}, up to {args.max_tokens} new tokens, "
          f"best of {args.repeats}")
    for name in args.shapes:
        torch_model, mlx_model = build_pair(SHAPES[name], seed=0)
        ids, mask = make_inputs(args.batch_size, seed=1)
        generate_batch(mlx_model, ids, mask, args.max_tokens)  # compile and warm up
        run_torch(torch_model, ids[:2], mask[:2], 4)
        mlx_time, mlx_out = timed(lambda: generate_batch(mlx_model, ids, mask, args.max_tokens), args.repeats)
        torch_time, torch_out = timed(lambda: run_torch(torch_model, ids, mask, args.max_tokens), args.repeats)
        tokens = sum(len(r) for r in torch_out)
        same = sum(a == b for a, b in zip(mlx_out, torch_out))
        print(f"{name:14s} tokens {tokens:5d}  MLX {tokens / mlx_time:8.1f} tok/s  "
              f"PyTorch {tokens / torch_time:8.1f} tok/s  ratio {torch_time / mlx_time:5.2f}x  "
              f"identical rows {same}/{len(torch_out)}")


if __name__ == "__main__":
    main()
