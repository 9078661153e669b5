"""Does step-by-step beat plain fine-tuning? Measured over rationale coverage, data size and source.

For each cell, the demo's tiny from-scratch T5 student trains twice on the same rows with the same
steps and seed: ``step-by-step`` (α 0.5, the coverage-aware loss) and ``finetune`` (labels only).
Both are scored once on the same test questions; the table gives each accuracy, the difference and
its paired-bootstrap 95% interval (``mlx_distill.metrics.paired_bootstrap``).

Grid (all of it by default; pass a subset when CPU time is short):

- task: ``demo`` (the bundled 4-class task, examples/demo) and ``arith`` (arithmetic word problems
  made here, whose label is the equation as in SVAMP and whose answer needs an intermediate product
  or sum: "5 bags of 3 apples, gives away 2" -> ``5 * 3 - 2``);
- data size: the share of the 600 training questions used (``--sizes``, 0.1 and 1);
- coverage: the share of those questions that get a rationale (``--coverages``, 0.05, 0.25, 1);
- source: ``reference`` (the task's own rationales) or ``teacher`` (SmolLM2-135M-Instruct Q4_1
  from the user cache answers the covered questions; the gold filter keeps the agreeing ones and
  rationales that only restate the answer are left out, the app's defaults).

Finetune does not read rationales, so it is trained once per (task, size) and compared with every
step-by-step cell of that (task, size). Results are appended to ``OUT/results.jsonl`` as each cell
finishes (a rerun skips finished cells); the table is printed at the end.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/payoff.py [--out /tmp/payoff] [--tasks demo arith] [--sizes 0.1 1]
        [--coverages 0.05 0.25 1] [--sources reference teacher] [--steps 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

from mlx_distill.commands.demo import DEMO_STUDENT, DEMO_TRAIN, demo_data_dir
from mlx_distill.data import load_rationales, load_task
from mlx_distill.metrics import paired_bootstrap
from mlx_distill.student import load_student
from mlx_distill.teacher import generate_rationales, smollm2_gguf
from mlx_distill.testing.tiny_t5 import build_tiny_t5
from mlx_distill.train import TrainConfig, evaluate, train

NAMES = ["Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana"]
ITEMS = ["apples", "pens", "cards", "shells", "stamps", "marbles", "cookies", "books"]


def _arith_row(rng: random.Random, index: int, split: str) -> dict:
    """One word problem: the label is the equation, the rationale computes the intermediate value."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    kind = rng.randrange(4)
    if kind == 0:
        question = f"{name} has {a} bags with {b} {item} in each. {name} gives away {c} {item}. How many {item} are left?"
        label, rationale = f"{a} * {b} - {c}", f"{a} bags of {b} {item} make {a} * {b} = {a * b}. Giving away {c} leaves {a * b} - {c} = {a * b - c}."
    elif kind == 1:
        question = f"{name} buys {a} packs of {b} {item} and already had {c} {item}. How many {item} does {name} have now?"
        label, rationale = f"{a} * {b} + {c}", f"{a} packs of {b} {item} are {a} * {b} = {a * b}. With the {c} from before: {a * b} + {c} = {a * b + c}."
    elif kind == 2:
        total = a * c
        question = (f"{name} had {total - b if total > b else total} {item} and got {b if total > b else 0} more. "
                    f"{name} shares them equally among {c} friends. How many {item} does each friend get?")
        first, more = (total - b, b) if total > b else (total, 0)
        label = f"( {first} + {more} ) / {c}"
        rationale = f"{first} + {more} = {total} {item} in all. Shared by {c}: {total} / {c} = {total // c}."
    else:
        question = f"{name} had {a + b} {item}, lost {b} of them and then found {c} more. How many {item} does {name} have?"
        label, rationale = f"{a + b} - {b} + {c}", f"After losing {b}: {a + b} - {b} = {a}. Finding {c} more: {a} + {c} = {a + c}."
    return {"id": f"arith-{split}-{index:04d}", "input": question, "label": label, "rationale": rationale}


def write_arith_task(folder: Path, seed: int = 0) -> Path:
    """600 / 100 / 100 arithmetic word problems as JSONL (the demo task's sizes)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 600), ("validation", 100), ("test", 100)):
        rows = [_arith_row(rng, i, split) for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _corpus(folder: Path) -> list[str]:
    texts = []
    for split in ("train", "validation", "test"):
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts += [row["input"], row["label"], row.get("rationale") or ""]
    return [t for t in texts if t]


def _student(out: Path, task: str, data_dir: Path) -> Path:
    folder = out / "students" / task
    if not (folder / "config.json").exists():
        build_tiny_t5(folder, corpus=_corpus(data_dir), **DEMO_STUDENT)
    return folder


def _covered(train_rows: list, coverage: float, seed: int = 0) -> list[str]:
    """The ids that get a rationale: a seeded share of the training rows (nested across coverages)."""
    order = [e.id for e in train_rows]
    random.Random(seed).shuffle(order)
    return order[: max(1, round(coverage * len(order)))]


def _teacher_records(out: Path, task_name: str, data, ids: list[str]) -> dict:
    """SmolLM2's records for ``ids`` (generated once into OUT/teacher-<task>.jsonl, resumed after)."""
    path = out / f"teacher-{task_name}.jsonl"
    wanted = [e for e in data.train if e.id in set(ids)]
    done = load_rationales(path) if path.exists() else {}
    missing = [e for e in wanted if e.id not in done]
    if missing:
        started = time.perf_counter()
        summary = generate_rationales(missing, "jsonl", str(smollm2_gguf(quiet=True)), path, batch_size=8,
                                      max_tokens=64, filter="gold", exemplar_pool=data.train)
        print(f"  teacher: {summary.accepted}/{summary.done} accepted, {summary.restating} restating, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return load_rationales(path)


def _train_and_score(student: Path, data, rationales, method: str, out_dir: Path, steps: int) -> tuple[list[bool], dict]:
    trainer_keys = {f.name for f in dataclasses.fields(TrainConfig)}  # DEMO_TRAIN also holds the run's selection keys
    settings = {**{k: v for k, v in DEMO_TRAIN.items() if k in trainer_keys}, "max_steps": steps, "method": method}
    config = TrainConfig(**settings, human_rationales=rationales is None)
    result = train(student, data, rationales, config, out_dir)
    model, tokenizer = load_student(result.student_dir)
    evaluate(model, tokenizer, data.task, data.test, predictions_path=out_dir / "test.jsonl")
    answers = [json.loads(line) for line in (out_dir / "test.jsonl").read_text().splitlines()]
    return [bool(a["correct"]) for a in answers], {"rationale_rows": result.rationale_rows, "examples": result.examples,
                                                    "restating_dropped": result.restating_dropped,
                                                    "best_validation": result.best_validation_accuracy}


def _cell_key(task: str, size: float, source: str, coverage: float | None) -> str:
    return f"{task}|{size:g}|{source}|{'-' if coverage is None else f'{coverage:g}'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/payoff"))
    parser.add_argument("--tasks", nargs="+", default=["demo", "arith"], choices=["demo", "arith"])
    parser.add_argument("--sizes", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--coverages", nargs="+", type=float, default=[0.05, 0.25, 1.0])
    parser.add_argument("--sources", nargs="+", default=["reference", "teacher"], choices=["reference", "teacher"])
    parser.add_argument("--teacher-max", type=int, default=0,
                        help="with --sources teacher: skip a cell whose teacher would answer more questions than this (0: no cap)")
    parser.add_argument("--steps", type=int, default=DEMO_TRAIN["max_steps"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    results = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            results[row["key"]] = row

    def record(row: dict) -> None:
        results[row["key"]] = row
        with results_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    for task in args.tasks:
        data_dir = demo_data_dir() if task == "demo" else write_arith_task(args.out / "arith")
        student = _student(args.out, task, data_dir)
        for size in args.sizes:
            data = load_task("jsonl", str(data_dir), seed=0, subsample=size)
            plain = dataclasses.replace(data, train=[dataclasses.replace(e, rationale=None) for e in data.train])
            key = _cell_key(task, size, "finetune", None)
            if key not in results:
                started = time.perf_counter()
                answers, info = _train_and_score(student, plain, None, "finetune", args.out / "runs" / key.replace("|", "_"),
                                                 args.steps)
                record({"key": key, "answers": answers, "seconds": time.perf_counter() - started, **info})
            finetune = results[key]["answers"]
            for source in args.sources:
                for coverage in args.coverages:
                    key = _cell_key(task, size, source, coverage)
                    if key in results:
                        continue
                    ids = set(_covered(data.train, coverage))
                    if source == "teacher" and args.teacher_max and len(ids) > args.teacher_max:
                        print(f"skipped {key}: the teacher would answer {len(ids)} questions (--teacher-max)")
                        continue
                    started = time.perf_counter()
                    if source == "reference":
                        cell = dataclasses.replace(data, train=[e if e.id in ids else dataclasses.replace(e, rationale=None)
                                                                for e in data.train])
                        rationales = None
                    else:
                        cell = plain
                        records = _teacher_records(args.out, task, data, sorted(ids))
                        rationales = {i: r for i, r in records.items() if i in ids}
                    answers, info = _train_and_score(student, cell, rationales, "step-by-step",
                                                     args.out / "runs" / key.replace("|", "_"), args.steps)
                    difference, low, high = paired_bootstrap(answers, finetune)
                    row = {"key": key, "answers": answers, "asked": len(ids), "difference": difference, "low": low,
                           "high": high, "seconds": time.perf_counter() - started, **info}
                    record(row)
                    print(f"{key}: step-by-step {sum(answers)}% finetune {sum(finetune)}% "
                          f"({difference * 100:+.0f} [{low * 100:+.0f}, {high * 100:+.0f}]) "
                          f"{info['rationale_rows']} rationale rows, {row['seconds']:.0f} s", flush=True)
    print_table(results)


def print_table(results: dict) -> None:
    print("\n| task | training questions | rationales | coverage asked | rationale rows trained on | step-by-step | finetune "
          "| difference [95% interval] |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in results.items():
        task, size, source, coverage = key.split("|")
        if source == "finetune":
            continue
        finetune = results[_cell_key(task, float(size), "finetune", None)]["answers"]
        total = len(row["answers"])
        print(f"| {task} | {row['examples']} | {source} | {float(coverage):.0%} | {row['rationale_rows']} "
              f"| {sum(row['answers']) / total:.0%} | {sum(finetune) / total:.0%} "
              f"| {row['difference'] * 100:+.0f} [{row['low'] * 100:+.0f}, {row['high'] * 100:+.0f}] |")


if __name__ == "__main__":
    main()
