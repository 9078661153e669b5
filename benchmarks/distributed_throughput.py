"""Two ranks vs one on this machine: teacher generation and data-parallel training throughput.

Both stages run through ``python -m mlx_distill.testing.distributed_check``, once as a single process and
once as two ring ranks on loopback (``mlx.launch --backend ring -n 2``), with the same work: the
same examples for the teacher, the same global batch and steps for training. Models are tiny and
random, built here (no downloads).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/distributed_throughput.py [--examples 96] [--steps 40]

Teacher: examples per second over the whole stage (load, generate, merge). Training: tokens per
second (input + target, all ranks) as the median of the trainer's reports after the first
(compilation). On two cores shared by both ranks little gain is possible: the ratio measures the
overhead of the collectives and of a second process. Across Macs each rank has its own cores.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = {"animal": ["cat", "dog", "horse", "sheep"], "fruit": ["apple", "banana", "grape", "mango"],
         "tool": ["hammer", "saw", "drill", "wrench"], "color": ["red", "blue", "green", "yellow"]}
FRAMES = ["I found a {} today.", "There is a {} near the old house by the river.", "My friend likes the {}.",
          "We talked about a {} all day long and then went home.", "Look at that {}."]


def _task(folder: Path, n: int) -> Path:
    rng = random.Random(0)
    pairs = [(k, w) for k, ws in WORDS.items() for w in ws]
    for split, count in (("train", n), ("validation", 8), ("test", 4)):
        with (folder / f"{split}.jsonl").open("w") as handle:
            for i in range(count):
                kind, word = rng.choice(pairs)
                handle.write(json.dumps({"id": f"{split}-{i}", "input": rng.choice(FRAMES).format(word), "label": kind,
                                         "rationale": f"{word} is a kind of {kind}."}) + "\n")
    return folder


def _run(ranks: int, args: list[str], result: Path) -> dict:
    command = [sys.executable, "-m", "mlx_distill.testing.distributed_check", *args, "--result", str(result)]
    if ranks > 1:
        launcher = str(Path(sys.executable).with_name("mlx.launch"))
        command = [launcher, "--backend", "ring", "-n", str(ranks), "--", *command]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=96, help="teacher examples (and training rows)")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--batch-size", type=int, default=16, help="global training batch")
    options = parser.parse_args()

    from mlx_distill.testing.tiny_llm import build_tiny_llm
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "task").mkdir()
        task = _task((root / "task").resolve(), options.examples)
        corpus = [f.format(w) for f in FRAMES for ws in WORDS.values() for w in ws] + ["predict: explain:"]
        llm = build_tiny_llm(root / "llm", arch="llama", corpus=corpus)
        t5 = build_tiny_t5(root / "t5", corpus=corpus, vocab_size=200, d_model=128, d_ff=256, num_layers=2,
                           num_decoder_layers=2, dropout_rate=0.0)
        rows = []
        teacher = {}
        for ranks in (1, 2):
            out = _run(ranks, ["teacher", "--model", str(llm), "--data", str(task), "--max-tokens", "24",
                               "--batch-size", "8", "--out", str(root / f"r{ranks}" / "r.jsonl")],
                       root / f"teacher{ranks}.json")
            teacher[ranks] = out["summary"]["done"] / out["seconds"]
        training = {}
        for ranks in (1, 2):
            out = _run(ranks, ["train", "--model", str(t5), "--data", str(task), "--steps", str(options.steps),
                               "--batch-size", str(options.batch_size), "--log-every", "5", "--validation", "4",
                               "--out", str(root / f"t{ranks}")], root / f"train{ranks}.json")
            training[ranks] = statistics.median(out["tokens_per_second"][1:] or out["tokens_per_second"])
        rows.append(("teacher examples/s", teacher))
        rows.append(("training tokens/s", training))
        print(f"{'':22} {'1 rank':>10} {'2 ranks':>10} {'2/1':>6}")
        for name, values in rows:
            print(f"{name:22} {values[1]:10.1f} {values[2]:10.1f} {values[2] / values[1]:6.2f}")


if __name__ == "__main__":
    main()
