"""`mlx-distill fetch-data TASK`: download a built-in task's dataset into the Hugging Face cache, once.

Afterwards every command reads it from the cache, offline (``HF_HUB_OFFLINE=1`` works).
``fetch-data paper-rationales`` downloads the paper authors' teacher outputs (``datasets.zip`` of
github.com/google-research/distilling-step-by-step) into mlx-distill's cache and unzips them.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Download a built-in task's dataset (svamp, cqa, esnli, anli, all) or the paper's rationales, once."

BUILT_IN = ("svamp", "cqa", "esnli", "anli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=(*BUILT_IN, "all", "paper-rationales"),
                        help="the task whose dataset to fetch, or paper-rationales (the authors' PaLM and "
                             "GPT-NeoX outputs, for train.rationale_source = \"paper-palm\" / \"paper-gpt-neox\")")
    parser.add_argument("--data", default=None, metavar="hf:ORG/NAME[:CONFIG][@REVISION]",
                        help="another hub copy than the task's default")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.data import DEFAULT_DATASETS, default_source, load_task, parse_hub_spec
    from mlx_distill.errors import DistillError

    if args.task == "paper-rationales":
        return _fetch_paper_rationales()
    if args.task == "all" and args.data:
        raise DistillError("--data names one dataset; give one task with it, "
                           "e.g. fetch-data anli --data hf:facebook/anli:all")
    for task in BUILT_IN if args.task == "all" else (args.task,):
        source = parse_hub_spec(args.data) if args.data else default_source(task)
        if source is None:
            raise DistillError(f"--data {args.data} is not a hub dataset; write hf:ORG/NAME[:CONFIG][@REVISION]")
        size = DEFAULT_DATASETS[task].size if source == default_source(task) else "size: see its dataset card"
        print(f"{task}: {source.spec}, {size}", flush=True)
        data = load_task(task, source.spec)
        print(f"{task}: cached, readable offline: {len(data.train)} train / {len(data.validation)} validation / "
              f"{len(data.test)} test (task.seed 0)")
    return 0


def _fetch_paper_rationales() -> int:
    from mlx_distill.data import DSS_ZIP_URL, fetch_paper_archive, paper_folder
    from mlx_distill.platform import format_bytes
    from mlx_distill.teacher import cache_root

    dest = paper_folder("", cache_root())
    print(f"paper rationales: {DSS_ZIP_URL} -> {dest}", flush=True)

    def progress(done: int, total: int | None) -> None:
        if sys.stderr.isatty():
            of = f" of {format_bytes(total)}" if total else ""
            print(f"\rdownloading {format_bytes(done)}{of}", end="", file=sys.stderr, flush=True)

    folder = fetch_paper_archive(dest, on_progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"paper rationales: ready in {folder} (train.paper_rationales = \"\" reads them from here)")
    return 0
