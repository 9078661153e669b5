"""Training throughput: our compiled MLX step vs transformers' PyTorch T5, measured in the same run.

Same config (random weights built in-process, no downloads), same batch (8 x (128 input + 64
target) tokens, no padding), AdamW, dropout as configured, train mode. Each measurement runs in
its own subprocess so peak memory (process max RSS, and MLX's own peak for MLX) is not shared.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/train_throughput.py [--shapes t5-small flan-t5-small] [--steps 5]

Tokens/s counts input + target tokens per step divided by the median step time. On a shared
machine wall time is noisy, so tokens per CPU-second (process CPU time of all threads) is
printed too; compare ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    # google-t5/t5-small config.json
    "t5-small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                     num_heads=8, feed_forward_proj="relu", tie_word_embeddings=True),
    # google/flan-t5-small config.json
    "flan-t5-small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8,
                          num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def _batch(args, vocab: int):
    import numpy as np

    rng = np.random.RandomState(0)
    inputs = rng.randint(2, vocab, size=(args.batch, args.input_tokens)).astype(np.int32)
    targets = rng.randint(2, vocab, size=(args.batch, args.target_tokens)).astype(np.int32)
    targets[:, -1] = 1  # EOS
    return inputs, targets


def _time_steps(run_step, args) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (all threads of this process) per timed step."""
    for _ in range(args.warmup):
        run_step()
    wall, cpu = [], []
    for _ in range(args.steps):
        tic, cpu_tic = time.perf_counter(), time.process_time()
        run_step()
        wall.append(time.perf_counter() - tic)
        cpu.append(time.process_time() - cpu_tic)
    return wall, cpu


def worker_mlx(args, config: dict) -> dict:
    import mlx.core as mx
    import numpy as np

    from mlx_distill.student import Model, ModelArgs
    from mlx_distill.train.step import build_step, make_optimizer

    model_args = ModelArgs.from_dict({**config, "dropout_rate": args.dropout})
    model = Model(model_args)
    if args.dtype == "bfloat16":
        model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    model.train()
    optimizer = make_optimizer("adamw", 1e-4)
    optimizer.init(model.trainable_parameters())
    step = build_step(model, optimizer, alpha=1.0, clip_norm=None, compile=not args.no_compile)
    state = [model.state, optimizer.state, mx.random.state]
    inputs, targets = _batch(args, model_args.vocab_size)
    decoder_inputs = np.concatenate([np.zeros((args.batch, 1), np.int32), targets[:, :-1]], axis=1)
    label = (mx.array(inputs), mx.ones(inputs.shape, mx.float32), mx.array(decoder_inputs), mx.array(targets),
             mx.ones(targets.shape, mx.float32))
    norm = mx.array(float(targets.size))

    def run_step():
        loss, _, _, _ = step(label, None, norm, norm, None, True)
        mx.eval(state, loss)

    mx.reset_peak_memory()
    times, cpu = _time_steps(run_step, args)
    return {"times": times, "cpu_times": cpu, "peak_bytes": mx.get_peak_memory()}


def worker_torch(args, config: dict) -> dict:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    hf = dict(config)
    if hf["feed_forward_proj"] == "gated-gelu":
        hf["dense_act_fn"] = "gelu_new"
    model = T5ForConditionalGeneration(T5Config(**hf, dropout_rate=args.dropout, decoder_start_token_id=0))
    if args.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    inputs, targets = _batch(args, config["vocab_size"])
    input_ids = torch.from_numpy(inputs).long()
    labels = torch.from_numpy(targets).long()
    mask = torch.ones_like(input_ids)

    def run_step():
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times, cpu = _time_steps(run_step, args)
    return {"times": times, "cpu_times": cpu, "torch_threads": torch.get_num_threads()}


def _run_worker(framework: str, shape: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", framework, "--shapes", shape, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--input-tokens", str(args.input_tokens),
               "--target-tokens", str(args.target_tokens), "--dropout", str(args.dropout), "--dtype", args.dtype]
    if args.no_compile:
        command.append("--no-compile")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{framework} {shape} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--target-tokens", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--no-compile", action="store_true", help="MLX step without mx.compile (for comparison)")
    parser.add_argument("--worker", choices=("mlx", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = (worker_mlx if args.worker == "mlx" else worker_torch)(args, SHAPES[args.shapes[0]])
        result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(result))
        return

    tokens = args.batch * (args.input_tokens + args.target_tokens)
    print(f"batch {args.batch} x ({args.input_tokens} + {args.target_tokens}) tokens = {tokens} tokens/step, "
          f"AdamW, dropout {args.dropout}, {args.dtype}, {args.steps} timed steps after {args.warmup} warm-up; "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}")
    print(f"{'shape':<14} {'framework':<8} {'s/step':>8} {'tokens/s':>9} {'tok/CPU-s':>9} {'peak RSS':>9} "
          f"{'MLX peak':>9}")
    for shape in args.shapes:
        rates, cpu_rates = {}, {}
        for framework in ("mlx", "torch"):
            result = _run_worker(framework, shape, args)
            seconds = statistics.median(result["times"])
            rates[framework] = tokens / seconds
            cpu_rates[framework] = tokens / statistics.median(result["cpu_times"])
            mlx_peak = f"{result['peak_bytes'] / 2**20:.0f} MB" if "peak_bytes" in result else "-"
            print(f"{shape:<14} {framework:<8} {seconds:8.3f} {rates[framework]:9.0f} {cpu_rates[framework]:9.0f} "
                  f"{result['max_rss_bytes'] / 2**20:7.0f} MB {mlx_peak:>9}", flush=True)
        print(f"{shape:<14} MLX / PyTorch: {rates['mlx'] / rates['torch']:.2f}x tokens/s, "
              f"{cpu_rates['mlx'] / cpu_rates['torch']:.2f}x tokens per CPU-second", flush=True)


if __name__ == "__main__":
    main()
