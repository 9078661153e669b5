"""One stage on every rank, for tests and benchmarks: ``mlx.launch ... -m mlx_distill.testing.distributed_check``.

    mlx.launch --backend ring -n 2 -- python -m mlx_distill.testing.distributed_check teacher \\
        --model TINY_LLM --data TASK_DIR --out OUT/rationales.jsonl --result OUT/teacher.json
    mlx.launch --backend ring -n 2 -- python -m mlx_distill.testing.distributed_check train \\
        --model TINY_T5 --data TASK_DIR --out OUT/train --result OUT/train.json --steps 6

Rank 0 writes ``--result``: the stage's figures (seconds, tokens, losses per step, ranks). The
same command without mlx.launch runs the one-process reference with the same global batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from mlx_distill import distributed
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.events import TrainStep
from mlx_distill.teacher import generate_rationales_sharded
from mlx_distill.train import TrainConfig, train


def _teacher(args: argparse.Namespace) -> dict:
    data = load_task("jsonl", args.data, seed=0)
    start = time.perf_counter()
    summary = generate_rationales_sharded(data.train, "jsonl", args.model, args.out, batch_size=args.batch_size,
                                          max_tokens=args.max_tokens, filter="all", limit=args.limit or None)
    return {"seconds": time.perf_counter() - start, "summary": dataclasses.asdict(summary),
            "examples": [e.id for e in data.train[: args.limit or None]]}


def _train(args: argparse.Namespace) -> dict:
    data = load_task("jsonl", args.data, seed=0)
    data = dataclasses.replace(data, validation=data.validation[: args.validation], test=[])
    config = TrainConfig(method="step-by-step", lr=3e-3, batch_size=args.batch_size, max_steps=args.steps,
                         log_every=args.log_every, eval_every=0, eval_batch_size=16, seed=0, compile=not args.no_compile)
    steps: list[dict] = []
    start = time.perf_counter()
    result = train(args.model, data, None, config, args.out, on_event=lambda e: isinstance(e, TrainStep)
                   and steps.append(dataclasses.asdict(e)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "losses": [s["loss"] for s in steps],
            "tokens_per_second": [s["tokens_per_second"] for s in steps], "final_loss": result.final_loss,
            "student_dir": result.student_dir}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_distill.testing.distributed_check")
    parser.add_argument("stage", choices=("teacher", "train"))
    parser.add_argument("--model", required=True, help="a tiny LLM (teacher) or T5 (train) folder")
    parser.add_argument("--data", required=True, help="a jsonl task folder")
    parser.add_argument("--out", required=True, help="the rationale file (teacher) or output folder (train)")
    parser.add_argument("--result", required=True, help="rank 0 writes the figures here as JSON")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--validation", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = _teacher(args) if args.stage == "teacher" else _train(args)
    except DistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result.update(rank=distributed.rank(), size=distributed.size())
    if distributed.is_main():
        Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
