"""`mlx-distill doctor`: what this machine gives MLX (device, BLAS, memory)."""

from __future__ import annotations

import argparse

HELP = "Show the MLX device, the BLAS in use and the memory available."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from mlx_distill import platform

    status = platform.blas_status()
    print(f"device:  {platform.device_name()}")
    speed = "fast" if status.fast else f"slow (fix: {platform.OPENBLAS_FIX})"
    print(f"blas:    {status.library} — {status.detail}, {speed}")
    print(f"memory:  {platform.format_bytes(platform.available_memory_bytes())} available "
          f"of {platform.format_bytes(platform.total_memory_bytes())}")
    return 0
