"""`mlx-distill models`: the catalog, with what fits this machine and what is downloaded."""

from __future__ import annotations

import argparse

HELP = "List recommended teachers and students: size, memory needed, fits here?, downloaded?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=("teacher", "student", "all"), default="all")


def main(args: argparse.Namespace) -> int:
    from mlx_distill.catalog import fits_in_memory, is_downloaded, load_catalog, usable_memory_bytes
    from mlx_distill.platform import format_bytes, is_apple_gpu

    apple_gpu = is_apple_gpu()

    catalog = load_catalog()
    print(f"memory usable for models on this machine: about {format_bytes(usable_memory_bytes())}")
    if not apple_gpu:
        print("no Apple GPU: teachers run dequantized to float32 here, so they need ~8x their download")
    groups = [("teacher", catalog.teachers, catalog.default_teacher),
              ("student", catalog.students, catalog.default_student)]
    for kind, models, default in groups:
        if args.kind not in (kind, "all"):
            continue
        stage = "generate" if kind == "teacher" else "train"
        print(f"\n{kind}s (memory = estimated need to {stage}):")
        print(f"  {'name':<18} {'hub id':<48} {'params':>7} {'download':>9} {'memory':>9}  fits  local")
        for model in models:
            mark = "*" if model.name == default else " "
            print(
                f"{mark} {model.name:<18} {model.id:<48} {model.params_billion:>6.2f}B "
                f"{format_bytes(model.download_bytes):>9} {format_bytes(model.runtime_memory_bytes(apple_gpu)):>9}  "
                f"{'yes ' if fits_in_memory(model) else 'no  '}  {'yes' if is_downloaded(model.id) else 'no'}"
            )
    print("\n* = default. Any hub id or local folder works wherever a catalog name does.")
    return 0
