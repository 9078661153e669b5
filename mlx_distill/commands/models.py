"""`mlx-distill models`: the catalog, and the GGUF models already on this Mac (Ollama, LM Studio),
with what fits this machine and what is downloaded."""

from __future__ import annotations

import argparse

HELP = ("List recommended teachers and students (size, memory needed, fits here?, downloaded?) and the "
        "GGUF models already in Ollama and LM Studio")


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
        print(f"\n{kind}s (memory = estimated need to {stage}; ~ = size estimated from the parameters):")
        print(f"  {'name':<18} {'hub id':<46} {'ollama':<13} {'params':>7} {'download':>10} {'memory':>9}  fits  local")
        for model in models:
            mark = "*" if model.name == default else " "
            size = ("" if model.size_is_published else "~") + format_bytes(model.download_bytes)
            print(
                f"{mark} {model.name:<18} {model.id:<46} {model.ollama or '-':<13} {model.params_billion:>6.2f}B "
                f"{size:>10} {format_bytes(model.runtime_memory_bytes(apple_gpu)):>9}  "
                f"{'yes ' if fits_in_memory(model) else 'no  '}  {'yes' if is_downloaded(model.id) else 'no'}"
            )
    if args.kind in ("teacher", "all"):
        _print_local_gguf(apple_gpu)
    print("\n* = default. Any hub id, local folder, .gguf file, ollama:NAME or lmstudio:NAME works "
          "wherever a catalog name does.")
    return 0


def _print_local_gguf(apple_gpu: bool) -> None:
    from mlx_distill.catalog import teacher_memory_bytes, usable_memory_bytes
    from mlx_distill.platform import format_bytes
    from mlx_distill.teacher import lmstudio_root, local_gguf_models, ollama_root

    found = local_gguf_models()
    print(f"\nGGUF models already on this machine (Ollama: {ollama_root()}, LM Studio: {lmstudio_root()}):")
    if not found:
        print("  none found (set OLLAMA_MODELS or LMSTUDIO_MODELS if your models live elsewhere)")
        return
    print(f"  {'teacher name':<44} {'arch':<8} {'type':<7} {'size':>9} {'memory':>9}  fits  supported")
    usable = usable_memory_bytes()
    for model in found:
        need = teacher_memory_bytes(model.weights, model.size, apple_gpu) if model.header else 0
        fits = "yes " if model.header and need <= usable else "no  "
        supported = "yes" if model.supported else f"no: {model.problem}"
        print(f"  {model.name:<44} {model.architecture:<8} {model.quant:<7} {format_bytes(model.size):>9} "
              f"{format_bytes(need) if need else '-':>9}  {fits}  {supported}")
