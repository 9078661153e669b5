"""`mlx-distill export`: a run's best student to a folder, optionally quantized, with its model card."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Export a run's best student (optionally quantized, measured against the float one) with a model card."

QUANTIZE_CHOICES = (4, 8)
GROUP_SIZE_CHOICES = (32, 64)


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """--quantize and --group-size (shared with `mlx-distill push`)."""
    parser.add_argument("--quantize", type=int, choices=QUANTIZE_CHOICES, default=None, metavar="{4,8}",
                        help="quantize to 4 or 8 bits with MLX's affine quantization (default: keep float; "
                             "a quantized student loads only in mlx-distill: ask, serve, chat, load_student; "
                             "not in transformers or mlx-lm)")
    parser.add_argument("--group-size", type=int, choices=GROUP_SIZE_CHOICES, default=None, metavar="{32,64}",
                        help="weights per quantization group (default: 64, or 32 when a layer's width needs it)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run folder, e.g. runs/svamp-qwen7b-flant5base")
    parser.add_argument("--out", default=None,
                        help="the folder to write (default: RUN/export/student, or RUN/export/student-8bit-g64)")
    add_quantize_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the result")


def print_result(result, stream=sys.stdout) -> None:
    """The export's figures: float against quantized when quantized."""
    from mlx_distill.platform import format_bytes

    def percent(value):
        return f"{value * 100:.1f}%" if value is not None else "not measured"

    def seconds(value):
        return f"{value:.4f} s" if value is not None else "not measured"

    print(f"exported to {result.folder}", file=stream)
    if result.quantization is None:
        print(f"  weights {format_bytes(result.figures.weight_bytes)}; test accuracy "
              f"{percent(result.figures.test_accuracy)} (from the run); model card: README.md", file=stream)
        return
    q = result.quantization
    label = f"{q['bits']}-bit g{q['group_size']}"
    print(f"  {'':14}{'float':>14}{label:>16}", file=stream)
    print(f"  {'weights':14}{format_bytes(result.float_figures.weight_bytes):>14}"
          f"{format_bytes(result.figures.weight_bytes):>16}  ({result.size_ratio * 100:.1f}% of float)", file=stream)
    print(f"  {'per answer':14}{seconds(result.float_figures.seconds_per_answer):>14}"
          f"{seconds(result.figures.seconds_per_answer):>16}", file=stream)
    print(f"  {'test accuracy':14}{percent(result.float_figures.test_accuracy):>14}"
          f"{percent(result.figures.test_accuracy):>16}", file=stream)
    if result.agreement is not None:
        print(f"  same answer as the float student on {percent(result.agreement)} of "
              f"{result.figures.total} test questions", file=stream)


def main(args: argparse.Namespace) -> int:
    from mlx_distill.progress import ProgressPrinter
    from mlx_distill.share import export_student

    printer = ProgressPrinter(quiet=args.quiet)
    try:
        result = export_student(Path(args.run), args.out, bits=args.quantize, group_size=args.group_size,
                                on_event=printer)
    finally:
        printer.close()
    print_result(result)
    return 0
