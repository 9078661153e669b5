"""`mlx-distill train`: train a T5 student on a task (step-by-step or a baseline), resumable."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from mlx_distill.commands.laptop_flags import add_laptop_arguments

HELP = "Train a T5 student with distilling step-by-step (or a baseline) and export the best one."


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlx_distill.config import TrainConfig

    parser.add_argument("--task", required=True, help="svamp, cqa, esnli, anli, or jsonl/csv for your own data")
    parser.add_argument("--data", required=True, help="the dataset file or folder")
    parser.add_argument("--rationales", default=None, help="the teacher's rationale JSONL (mlx-distill generate)")
    parser.add_argument("--student", required=True, help="student folder or hub id (e.g. google/flan-t5-small)")
    parser.add_argument("--out", required=True, help="output folder: checkpoints/, student/, predictions")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of train used as validation when the dataset has no validation split")
    parser.add_argument("--subsample", type=float, default=1.0, help="seeded fraction of the training set to use")
    parser.add_argument("--columns", default=None, metavar="KEY=COLUMN,...",
                        help="for jsonl/csv data: your column names, e.g. input=question,label=answer")
    parser.add_argument("--quiet", action="store_true", help="print only results and errors")
    add_laptop_arguments(parser)
    # Every TrainConfig field is a flag; default None tells "not given" from "given".
    for field in dataclasses.fields(TrainConfig):
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
        if field.type in ("bool", bool):
            parser.add_argument(_flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(field.type), str)
        parser.add_argument(_flag(field.name), dest=field.name, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace):
    """The TrainConfig: given flags over the dataclass defaults."""
    from mlx_distill.config import TrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**given)


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run."""
    words = [w for w in argv if w != "--resume"]
    return "mlx-distill " + " ".join(shlex.quote(w) for w in words) + " --resume"


def main(args: argparse.Namespace) -> int:
    import dataclasses as dc

    from mlx_distill.commands.laptop_flags import laptop_settings
    from mlx_distill.commands.stopping import stop_on_signals
    from mlx_distill.data import load_rationales, load_task, parse_columns
    from mlx_distill.errors import DistillError
    from mlx_distill.files import prepare_output_dir
    from mlx_distill.machine import CONTINUE_FILE, laptop_stage
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.student import check_student, load_student
    from mlx_distill.train import evaluate, train

    config = config_from_args(args)
    config.validate(where="--")
    if config.seed < 0:
        raise DistillError(f"--seed {config.seed} must not be negative")
    columns = parse_columns(args.columns) if args.columns is not None else None
    check_student(args.student)
    printer = ProgressPrinter(quiet=args.quiet)
    try:
        task_data = load_task(args.task, args.data, seed=config.seed, validation_fraction=args.validation_fraction,
                              subsample=args.subsample, columns=columns)
        rationales = load_rationales(args.rationales, on_event=printer) if args.rationales else None
        if rationales is None and not config.human_rationales:
            # Without --human-rationales the dataset's own rationales are not trained on.
            task_data = dc.replace(task_data, train=[dc.replace(e, rationale=None) for e in task_data.train])
        # Before the laptop side clears the continue file in it (train checks it the same way).
        prepare_output_dir(args.out, "the training output folder")
        # Awake while training and testing, paused on a low battery, MLX's memory limit, a word at the end.
        with stop_on_signals() as should_stop, laptop_stage(
                laptop_settings(args), "train", f"mlx-distill train ({Path(args.out).name})",
                Path(args.out) / CONTINUE_FILE, printer, should_stop) as (on_event, stage_stop):
            result = train(args.student, task_data, rationales, config, args.out, resume=args.resume,
                           on_event=on_event, should_stop=stage_stop)
            test = None
            if not result.stopped and task_data.test:
                model, tokenizer = load_student(result.student_dir)
                test = evaluate(model, tokenizer, task_data.task, task_data.test, batch_size=config.eval_batch_size,
                                max_tokens=config.answer_max_tokens,
                                predictions_path=Path(args.out) / "predictions_test.jsonl", method=config.method,
                                split="test", on_event=on_event)
    finally:
        printer.close()
    if result.stopped:
        print(f"stopped at step {result.steps}; checkpoint {result.checkpoint}", file=sys.stderr)
        print(f"resume with: {resume_command(sys.argv[1:])}", file=sys.stderr)
        return 130
    best = result.best_validation_accuracy
    print(f"trained {result.steps} steps; best validation accuracy "
          f"{'-' if best is None else f'{best * 100:.1f}%'} (step {result.best_step}); test accuracy "
          f"{'-' if test is None else f'{test.accuracy * 100:.1f}%'}; student saved to {result.student_dir}")
    return 0
