"""`mlx-distill try CONFIG`: the teacher stage on a small validation sample, to tune the prompt first.

With a real teacher the prompt decides almost everything; this shows in a minute what the full
stage would take hours to show. `--search K` builds K few-shot sets from the training rows and
reports the best one's gain on a second sample; `--adopt` writes the prompt into CONFIG.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlx_distill.progress import format_duration

HELP = "Try the teacher's prompt on a few validation questions (accept rate, bias, time); search exemplars."

EXAMPLES_SHOWN = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the run config TOML file")
    parser.add_argument("--n", type=int, default=24, help="validation questions per sample (default: 24)")
    parser.add_argument("--prompt-file", help="try this prompt file instead of the config's prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    parser.add_argument("--search", type=int, metavar="K",
                        help="build K few-shot sets from the training rows, keep the best, report its gain")
    parser.add_argument("--adopt", action="store_true",
                        help="write the tried (or, with --search, the chosen) prompt into CONFIG's teacher.prompt_file")
    parser.add_argument("--run-dir", help="the run folder (default: <runs_dir>/<name> from the config)")
    parser.add_argument("--quiet", action="store_true", help="print only the results")


def main(args: argparse.Namespace) -> int:
    # The config reader pulls in the task readers; the lab pulls in MLX and the teacher.
    from mlx_distill.commands.stopping import stop_on_signals
    from mlx_distill.config import load_config
    from mlx_distill.data import load_task
    from mlx_distill.errors import DistillError
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.prompt_lab import MIN_SAMPLE, TrialStopped, adopt_prompt, search_exemplars, try_prompt
    from mlx_distill.teacher import check_teacher, load_prompt

    if args.n < MIN_SAMPLE:
        raise DistillError(f"--n {args.n} is too small: a sample needs at least {MIN_SAMPLE} questions; "
                           f"give --n {MIN_SAMPLE} or more")
    if args.seed < 0 or (args.search is not None and args.search < 1):
        raise DistillError("--search must be at least 1 and --seed not negative")
    config = load_config(args.config)
    if args.adopt and not _writable(Path(args.config)):
        raise DistillError(f"--adopt cannot write {args.config} (read-only file or folder); make it writable "
                           "or leave out --adopt")
    if not config.teacher.enabled:
        raise DistillError(f"{args.config}: teacher.enabled is false; there is no teacher prompt to try")
    prompt_text = None
    if args.prompt_file:
        prompt_text = load_prompt(config.task.name, args.prompt_file).source
    check_teacher(config.teacher.model)
    task = config.task
    task_data = load_task(task.name, task.data, seed=task.seed, validation_fraction=task.validation_fraction,
                          subsample=task.subsample, columns=task.columns or None,
                          human_rationales=task.human_rationales or None)
    printer = ProgressPrinter(quiet=args.quiet)
    try:
        with stop_on_signals() as should_stop:
            if args.search:
                if prompt_text is not None:
                    raise DistillError("--search starts from the config's prompt; leave out --prompt-file")
                result = search_exemplars(config, task_data, k=args.search, n=args.n, seed=args.seed,
                                          run_dir=args.run_dir, on_event=printer, should_stop=should_stop)
            else:
                trial, shown = try_prompt(config, task_data, n=args.n, seed=args.seed, prompt_text=prompt_text,
                                          label=Path(args.prompt_file).name if args.prompt_file else "",
                                          run_dir=args.run_dir, on_event=printer, should_stop=should_stop)
    except TrialStopped as stopped:
        print(f"{stopped}; run the same command to resume", file=sys.stderr)
        return 130
    finally:
        printer.close()
    if args.search:
        _print_search(result)
        adopted = result.best_second.prompt_path
    else:
        _print_trial(trial, shown)
        adopted = trial.prompt_path
    if args.adopt:
        adopt_prompt(args.config, adopted)
        print(f"adopted: {args.config} now has teacher.prompt_file = {adopted}")
        if args.search and result.gain < 0:
            print("warning: the chosen set did worse than the current prompt on the second sample", file=sys.stderr)
    else:
        print(f"prompt kept as {adopted}; add --adopt to use it in {args.config}")
    return 0


def _writable(config: Path) -> bool:
    # The config is replaced atomically: both the file and its folder must be writable.
    return os.access(config, os.W_OK) and os.access(config.resolve().parent, os.W_OK)


def _rate(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.0%})" if total else "0/0"


def _print_trial(trial, shown) -> None:
    n = trial.questions
    print(f"\nprompt {trial.prompt_hash} ({trial.label}) on {n} validation questions:")
    print(f"  accepted          {_rate(trial.accepted, n)}")
    print(f"  parse failures    {_rate(trial.parse_failures, n)}")
    print(f"  disagree with gold {_rate(trial.disagreements, n)}")
    print(f"  restate the answer {_rate(trial.restating, n)} (accepted or not)")
    answers = ", ".join(f"{a} {c}" for a, c in list(trial.answers.items())[:8])
    gold = ", ".join(f"{a} {c}" for a, c in list(trial.gold.items())[:8])
    print(f"  answers: {answers}\n  gold:    {gold}")
    print(f"  {trial.tokens_per_answer:.0f} tokens and {trial.seconds_per_answer:.2f} s per answer; the full stage "
          f"({trial.stage_questions} questions) would take about {format_duration(trial.estimated_stage_seconds)}")
    for title, chosen in (("accepted", [e for e in shown if e.accepted]),
                          ("rejected", [e for e in shown if not e.accepted])):
        for example in chosen[:EXAMPLES_SHOWN]:
            why = "" if example.accepted else f" ({example.rejected_because or 'rejected'})"
            print(f"\n--- {title}{why}: {example.id}\n{example.question}\n"
                  f"teacher: {example.rationale} → {example.answer or '-'}\ngold: {example.gold}")


def _print_search(result) -> None:
    low, mid, high = result.spread()
    source = "the teacher's own gold-agreeing rationales" if result.bootstrapped else "reference rationales"
    print(f"\n{len(result.candidates)} exemplar sets from the training rows ({source}), first sample of "
          f"{result.best.questions} questions:")
    print(f"  current prompt  {result.default_first.accept_rate:.0%} accepted")
    for trial in result.candidates:
        mark = "  ← chosen" if trial is result.best else ""
        print(f"  {trial.label:<15} {trial.accept_rate:.0%} accepted, {trial.restating} restating, "
              f"{trial.parse_failures} parse failures{mark}")
    print(f"  spread: {low:.0%} to {high:.0%} (median {mid:.0%})")
    if result.best is result.default_first:
        print("  no set beats the current prompt on this sample: the current prompt stays")
    print(f"second sample ({result.best_second.questions} other questions; not used to choose):")
    print(f"  current prompt {result.default_second.accept_rate:.0%}, chosen set {result.best_second.accept_rate:.0%}: "
          f"gain {result.gain * 100:+.0f} points")
    print(f"  the full stage would take about {format_duration(result.best_second.estimated_stage_seconds)} "
          "with the chosen set")
