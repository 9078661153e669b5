"""`mlx-distill data CONFIG`: what a run would train and test on, before any model is loaded.

Prints the split sizes (and how they were made), the label distribution, rationale coverage by
source, the longest inputs against the student's input limit (counted with the student's
tokenizer when it is on this machine, else estimated) and a few examples. Reads the data the run
reads (a hub dataset is fetched into the cache if it is not there yet); loads no model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Check a run config's data before any model is loaded: splits, labels, rationale coverage, lengths."

# Characters per token of T5's tokenizer on English text, for an estimate without the tokenizer.
_CHARS_PER_TOKEN = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run config TOML file")
    parser.add_argument("--examples", type=int, default=2, help="examples shown (default: 2)")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.config import load_config
    from mlx_distill.data import load_task
    from mlx_distill.data.summary import SPLITS, answer_positions, input_lengths, label_counts
    from mlx_distill.errors import DistillError

    if args.examples < 0:
        raise DistillError(f"--examples {args.examples} must not be negative")
    config = load_config(args.config)
    task = config.task
    data = load_task(task.name, task.data, seed=task.seed, validation_fraction=task.validation_fraction,
                     subsample=task.subsample, columns=task.columns or None,
                     human_rationales=task.human_rationales or None)
    print(f"{task.name} from {task.data}")
    print("splits: " + " / ".join(f"{len(getattr(data, s))} {s}" for s in SPLITS))
    for note in data.notes:
        print(f"  {note}")
    top, distinct = label_counts(data.train)
    print(f"labels (train): {distinct} distinct; most frequent: "
          + ", ".join(f"{_short(label, 30)} {n}" for label, n in top))
    positions = answer_positions(data.train)
    if positions:
        print("answer position (train): " + ", ".join(f"({key}) {n}" for key, n in positions))
    print("rationales (train):")
    for coverage in _coverages(config, data):
        agree = "" if coverage.agreeing is None else f", {coverage.agreeing} agree with the gold label"
        share = coverage.with_rationale / coverage.total if coverage.total else 0.0
        used = coverage.source.split(" ")[0] == config.train.rationale_source
        print(f"  {coverage.source}: {coverage.with_rationale}/{coverage.total} ({share:.0%}){agree}{coverage.note}"
              + ("  <- used (train.rationale_source)" if used else ""))
    count, how = _token_counter(config.train.student)
    limit = config.train.trainer.max_input_tokens
    longest, over = input_lengths(data, count, limit)
    print(f"input lengths ({how}; the student reads {limit} tokens, train.max_input_tokens):")
    for item in longest:
        print(f"  {item.tokens} tokens: {item.split} {item.id}")
    cut = {s: n for s, n in over.items() if n}
    print("  " + ("; ".join(f"{n} {s} inputs are longer and will be cut" for s, n in cut.items()) if cut
                  else "every input fits"))
    for example in data.train[:args.examples]:
        print(f"\nexample {example.id}:\n  input: {_short(example.input, 300)}\n  label: {_short(example.label, 80)}"
              + (f"\n  human rationale: {_short(example.rationale, 200)}" if example.rationale else ""))
    return 0


def _coverages(config, data) -> list:
    from mlx_distill.data import PAPER_SOURCES, load_paper_rationales, load_rationales, paper_folder
    from mlx_distill.data.summary import human_coverage, record_coverage
    from mlx_distill.errors import DistillError
    from mlx_distill.teacher import cache_root

    found = [human_coverage(data.train)]
    rationales = Path(config.runs_dir) / config.name / "rationales.jsonl"
    if rationales.is_file():
        found.append(record_coverage(f"teacher ({rationales})", data.train, load_rationales(rationales)))
    elif config.teacher.enabled:
        found.append(record_coverage("teacher", data.train, {}, note=" (the teacher stage has not run yet)"))
    sources = {config.train.rationale_source} & set(PAPER_SOURCES) or set(PAPER_SOURCES)
    for source in sorted(sources):
        folder = paper_folder(config.train.paper_rationales, cache_root())
        try:
            records = load_paper_rationales(folder, config.task.name, source, data.train, filter=config.teacher.filter)
        except DistillError as error:
            if source == config.train.rationale_source:
                raise
            if folder.exists():
                found.append(record_coverage(source, data.train, {}, note=f" ({error})"))
            continue
        found.append(record_coverage(source, data.train, records, note=f" (teacher.filter = {config.teacher.filter})"))
    return found


def _token_counter(student: str):
    """A function counting tokens with the student's tokenizer if it is on this machine, else an estimate."""
    from mlx_distill.catalog import resolve_model

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(student), local_files_only=True)
    except Exception:  # not downloaded, or not a tokenizer: fall back to the estimate
        return (lambda texts: [len(t) // _CHARS_PER_TOKEN + 1 for t in texts],
                f"estimated at {_CHARS_PER_TOKEN} characters a token: {student}'s tokenizer is not downloaded yet")
    return (lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]],
            f"{student}'s tokenizer")


def _short(text: str, width: int) -> str:
    text = text.replace("\n", " | ")
    return text if len(text) <= width else text[:width - 1] + "…"
