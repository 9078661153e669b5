"""`mlx-distill demo`: the whole pipeline offline in a few minutes, on tiny models built here.

A demo of the machinery, not of quality: the teacher is a tiny random llama (its rationales are
noise and the gold filter rejects them), so the student learns from the bundled task's reference
rationales. Every stage still runs for real and the run folder is like any other.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import tomli_w

from mlx_distill.commands.run import run_with_signals
from mlx_distill.files import read_jsonl_records, write_text_atomic

HELP = "Run the whole pipeline offline on tiny models and a bundled task (a demo of the machinery)."

DEMO_NAME = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="where the run folder goes (default: runs)")
    parser.add_argument("--name", default=DEMO_NAME, help="the run folder's name (default: demo)")
    parser.add_argument("--quiet", action="store_true", help="print only stage boundaries, results and errors")
    parser.add_argument("--config-only", action="store_true",
                        help="build the tiny models and write the config, but do not run it")


def demo_data_dir() -> Path:
    """examples/demo in a source checkout, or the copy shipped in the wheel."""
    checkout = Path(__file__).resolve().parents[2] / "examples" / "demo"
    if (checkout / "train.jsonl").is_file():
        return checkout
    return Path(str(resources.files("mlx_distill.demo_data")))


def _demo_corpus(data_dir: Path) -> list[str]:
    texts = []
    for split in ("train", "validation", "test"):
        for record in read_jsonl_records(data_dir / f"{split}.jsonl"):
            texts += [record["input"], record["label"], record.get("rationale") or ""]
    return [t for t in texts if t]


def prepare_demo(runs_dir: Path, name: str) -> Path:
    """Build the tiny teacher and student (once) and write the demo's run config; return its path."""
    # MLX and mlx_lm: only when the demo runs, not for `mlx-distill --help`.
    from mlx_distill.testing.tiny_llm import build_tiny_llm
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    data_dir = demo_data_dir()
    models_dir = runs_dir / f"{name}-models"
    teacher_dir, student_dir = models_dir / "tiny-llama-teacher", models_dir / "tiny-t5-student"
    corpus = _demo_corpus(data_dir)
    if not (teacher_dir / "config.json").exists():
        build_tiny_llm(teacher_dir, arch="llama", corpus=corpus, seed=0)
    if not (student_dir / "config.json").exists():
        build_tiny_t5(student_dir, corpus=corpus, **DEMO_STUDENT)
    config = {
        "name": name,
        "runs_dir": str(runs_dir.resolve()),
        "task": {"name": "jsonl", "data": str(data_dir), "seed": 0},
        "teacher": {
            "model": str(teacher_dir.resolve()),
            "batch_size": 8,
            "max_tokens": 24,
            "limit": 24,  # the tiny random teacher only shows the stage working
            "filter": "gold",
        },
        "train": {"student": str(student_dir.resolve()), "rationale_source": "human", **DEMO_TRAIN},
    }
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{name}.toml"
    write_text_atomic(path, "# Written by `mlx-distill demo`: tiny local models and the bundled demo task.\n"
                      + tomli_w.dumps(config))
    return path


# A from-scratch student small enough to learn the demo task in about a minute on 2 CPU cores.
DEMO_STUDENT = dict(variant="v1.1", vocab_size=400, d_model=96, d_ff=192, num_layers=2, num_decoder_layers=2,
                    num_heads=4, d_kv=24, dropout_rate=0.0,
                    seed=0)
DEMO_TRAIN = dict(method="step-by-step", alpha=0.5, lr=3e-3, batch_size=32, max_steps=300, eval_every=100,
                  warmup_steps=20)


def main(args: argparse.Namespace) -> int:
    from mlx_distill.config import check_run_name, load_config  # reads the catalog and the task readers

    check_run_name(args.name, "--name")  # before anything is built outside --runs-dir
    config_path = prepare_demo(Path(args.runs_dir), args.name)
    if args.config_only:
        print(config_path)
        return 0
    print("mlx-distill demo: tiny random models built here; a demo of the machinery, not of quality")
    return run_with_signals(load_config(config_path), quiet=args.quiet)
