"""Our teacher stage on a GGUF file against llama.cpp on the same file, same prompts, same new tokens.

    python benchmarks/teacher_gguf.py [--gguf FILE] [--questions 32] [--max-tokens 48]

Runs ``teacher.generate_rationales`` on the demo task's questions with the GGUF teacher (default:
SmolLM2-135M-Instruct Q4_1, fetched like the demo does) in float32 (the CPU default: dequantized at
load) and kept quantized (``precision="native"``), at batch 1 and 16, then llama.cpp through
``llama-cpp-python`` on the same rendered prompts, greedy, the same number of new tokens. Prints
generated tokens per second of each whole stage (teacher load included) and the ratios, all
measured in this run.

llama-cpp-python is not a dependency of mlx-distill; build it for the benchmark only:

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python   # compiles llama.cpp (minutes)

Without it the llama.cpp rows are skipped (said on screen).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.data import load_task
from mlx_distill.teacher import generate_rationales, gguf_teacher_folder, load_prompt, render_prompt, smollm2_gguf


def ours(gguf: str, examples: list, precision: str, batch_size: int, max_tokens: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as temp:
        summary = generate_rationales(examples, "jsonl", gguf, Path(temp) / "r.jsonl", batch_size=batch_size,
                                      max_tokens=max_tokens, precision=precision, filter="all")
    return summary.generated_tokens / summary.seconds, summary.generated_tokens


def llama_cpp(gguf: str, examples: list, pool: list, max_tokens: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: llama.cpp rows skipped (see this file's docstring)")
        return None
    from mlx_lm import load

    from mlx_distill.teacher import pick_exemplars

    _, tokenizer = load(str(gguf_teacher_folder(gguf)))
    template = load_prompt("jsonl", None, pick_exemplars(pool))
    prompts = [render_prompt(tokenizer, template, "jsonl", e.input) for e in examples]
    model = Llama(model_path=gguf, n_ctx=2048, n_batch=512, verbose=False)
    tokens, start = 0, time.perf_counter()
    for prompt in prompts:
        model.reset()
        for count, token in enumerate(model.generate(prompt, temp=0.0, top_k=1), start=1):
            if token == model.token_eos() or count >= max_tokens:
                tokens += count
                break
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", default=None, help="a .gguf file (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    gguf = args.gguf or str(smollm2_gguf())
    pool = load_task("jsonl", demo_data_dir()).train
    examples = pool[: args.questions]
    results = {}
    for precision in ("float32", "native"):
        for batch in (1, 16):
            results[(precision, batch)], _ = ours(gguf, examples, precision, batch, args.max_tokens)
            print(f"ours {precision:8s} batch {batch:2d}: {results[(precision, batch)]:7.1f} generated tokens/s")
    for batch in (1, 16):
        print(f"batch {batch}: float32 is {results[('float32', batch)] / results[('native', batch)]:.1f}x "
              "the kept-quantized speed")
    reference = llama_cpp(gguf, examples, pool, args.max_tokens)
    if reference:
        print(f"llama.cpp (one prompt at a time): {reference:7.1f} generated tokens/s")
        for (precision, batch), speed in results.items():
            print(f"ours {precision} batch {batch} / llama.cpp: {speed / reference:.2f}x")


if __name__ == "__main__":
    main()
