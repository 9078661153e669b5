"""Peak memory and time of converting a GGUF file into an MLX model folder, against the output's size.

    python benchmarks/gguf_convert.py [--layers 10] [--hidden 2048] [--ffn 5632] [--type Q4_K]

Writes a Llama-layout GGUF of a few hundred MB (random weights in the given type; Q4_K by default,
what a Q4_K_M file mostly holds), converts it in a fresh process and prints that process's peak
resident memory (VmHWM on Linux, ru_maxrss elsewhere) above its baseline (Python, MLX and transformers imported), the
output's size, the largest tensor in float32, the ratio of the peak to the output, and the time.
The converter reads one tensor at a time and writes shards of 1 GiB as they fill, so the peak
should stay near min(output, 1 GiB) plus one tensor's intermediates, whatever the model's size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mlx_distill.platform import format_bytes
from mlx_distill.testing.gguf_models import largest_tensor_float32_bytes, measure_conversion, write_tiny_gguf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--type", default="Q4_K")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        gguf = write_tiny_gguf(Path(folder) / "bench.gguf", "llama", args.type, hidden=args.hidden,
                               layers=args.layers, heads=args.hidden // 64, kv_heads=args.hidden // 256,
                               ffn=args.ffn)
        size = gguf.stat().st_size
        largest = largest_tensor_float32_bytes(gguf)
        result = measure_conversion(gguf, Path(folder) / "mlx")
    above = result["peak"] - result["baseline"]
    print(f"GGUF file: {format_bytes(size)} ({args.type}, {args.layers} layers, hidden {args.hidden}, ffn {args.ffn})")
    print(f"output: {format_bytes(result['output'])}; largest tensor in float32: {format_bytes(largest)}")
    print(f"peak resident memory above the baseline: {format_bytes(above)} "
          f"(baseline {format_bytes(result['baseline'])}, peak {format_bytes(result['peak'])})")
    print(f"peak / output: {above / result['output']:.2f}; "
          f"(peak - output) / largest tensor in float32: {(above - result['output']) / largest:.2f}")
    print(f"converted in {result['seconds']:.1f} s ({result['output'] / result['seconds'] / 1e6:.0f} MB/s of output)")


if __name__ == "__main__":
    main()
