"""`mlx-distill doctor`: what this machine gives MLX (device, BLAS, memory) and what a long run on
a laptop does here (memory limit, prefill steps, power, sleep, notifications)."""

from __future__ import annotations

import argparse

HELP = "Show the MLX device, the BLAS in use, the memory available and the laptop settings a run uses."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from mlx_distill import machine, platform
    from mlx_distill.config import RunSection, TeacherConfig

    status = platform.blas_status()
    print(f"device:  {platform.device_name()}")
    speed = "fast" if status.fast else f"slow (fix: {platform.OPENBLAS_FIX})"
    print(f"blas:    {status.library} — {status.detail}, {speed}")
    print(f"memory:  {platform.format_bytes(platform.available_memory_bytes())} available "
          f"of {platform.format_bytes(platform.total_memory_bytes())}")
    defaults = RunSection()
    for label, text in machine.laptop_lines(batch_size=TeacherConfig().batch_size,
                                            pause_below_battery=defaults.pause_below_battery):
        print(f"{label + ':':<8} {text}")
    return 0
