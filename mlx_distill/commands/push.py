"""`mlx-distill push`: a run's student, with its model card, to a Hugging Face hub repo."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlx_distill.commands.export import add_quantize_arguments

HELP = "Push a run's student (exported first if needed) with its model card to a Hugging Face hub repo."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run folder, e.g. runs/svamp-qwen7b-flant5base")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the hub repo, NAME/REPO (created if new)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    add_quantize_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    parser.add_argument("--quiet", action="store_true", help="print only the result")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.commands.export import print_result
    from mlx_distill.platform import format_bytes
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.share import (EXPORT_DIR, check_repo_id, export_student, find_token, plan_push, push_folder,
                                   read_checked_metrics, write_model_card)

    run = Path(args.run)
    check_repo_id(args.repo_id)  # these before an export that may take minutes
    read_checked_metrics(run)  # the card is written from it
    if not args.dry_run:
        find_token()
    folder = _existing_export(run / EXPORT_DIR, args.quantize, args.group_size)
    if folder is None:
        printer = ProgressPrinter(quiet=args.quiet)
        try:
            result = export_student(run, bits=args.quantize, group_size=args.group_size, on_event=printer)
        finally:
            printer.close()
        print_result(result)
        folder = result.folder
    else:
        print(f"pushing the existing export {folder}")
    if args.dry_run:  # the export is left as it is: its card names the repo only when pushed
        plan = plan_push(folder, args.repo_id, args.private)
        print(f"dry run: would push {len(plan.files)} files ({format_bytes(plan.total_bytes)}) to "
              f"{'a private' if plan.private else 'a public'} repo {plan.repo_id}:")
        for name, size in plan.files:
            print(f"  {name}  {format_bytes(size)}")
        print(f"(a push first rewrites README.md so that its snippets load {plan.repo_id})")
        return 0
    write_model_card(run, folder, model_ref=args.repo_id, export=folder.name)
    plan = plan_push(folder, args.repo_id, args.private)
    url = push_folder(plan)
    print(f"pushed {len(plan.files)} files to {plan.repo_id}: {url}")
    return 0


def _existing_export(export_dir: Path, bits: int | None, group_size: int | None) -> Path | None:
    """A finished export with these options, to push again without re-measuring."""
    from mlx_distill.share import export_name

    if bits is None:
        names = [export_name(None, None)]
    else:
        names = [export_name(bits, size) for size in ((group_size,) if group_size else (64, 32))]
    for name in names:
        folder = export_dir / name
        if (folder / "config.json").is_file() and (folder / "README.md").is_file():
            return folder
    return None
