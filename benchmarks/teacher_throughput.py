"""Teacher throughput: the whole teacher stage at batch 1/4/8/16, shared-prefix cache on and off,
against a plain one-at-a-time ``mlx_lm.generate`` loop on the same model in the same run.

The model is a random Qwen2.5-0.5B-shaped qwen2 (24 layers, hidden 896, 14/2 heads, vocab 151936,
float32) built in-process with ``mlx_distill.testing.tiny_llm.build_tiny_llm``; its text is noise, which
is fine for speed: it rarely emits EOS, so every answer runs to ``--max-tokens`` in both loops.

The stage figure is generated tokens / wall time from TeacherLoaded to TeacherReleased, so prompt
rendering, the prefix prefill, batching, parsing, filtering and the fsynced JSONL writes are
all inside it. Run:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \\
        .venv/bin/python benchmarks/teacher_throughput.py
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import mlx.core as mx

from mlx_distill.data import Example
from mlx_distill.events import TeacherLoaded, TeacherReleased
from mlx_distill.platform import blas_status, device_name
from mlx_distill.teacher import generate_rationales, load_prompt, render_prompt
from mlx_distill.testing.tiny_llm import build_tiny_llm

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                  max_position_embeddings=32768, rope_theta=1000000.0)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def _examples(n: int):
    things = ["apples", "pencils", "stickers", "marbles", "books", "shells", "cookies", "coins"]
    names = ["Sam", "Lena", "Omar", "Mia", "Ravi", "Jo", "Kim", "Ada"]
    examples = []
    for i in range(n):
        a, b = 3 + (i * 7) % 40, 2 + (i * 5) % 17
        text = (f"{names[i % 8]} had {a} {things[i % 8]}. A friend gave {names[i % 8]} {b} more "
                f"{things[i % 8]}" + (" after school" if i % 3 else "") + f". How many {things[i % 8]} "
                f"does {names[i % 8]} have now?")
        examples.append(Example(id=f"b{i}", input=text, label=f"( {a} + {b} )"))
    return examples


def _baseline(model_dir: Path, examples, max_tokens: int) -> tuple[float, int, float]:
    """Plain one-at-a-time mlx_lm.stream_generate on the full few-shot prompt; returns (tok/s, tokens, s)."""
    from mlx_lm import load, stream_generate  # imports transformers (seconds): not for --help

    model, tokenizer = load(str(model_dir))
    template = load_prompt("svamp")
    # Warm up (first-call costs) so the loop is measured in its steady state, as the stage is.
    for _ in stream_generate(model, tokenizer, render_prompt(tokenizer, template, "svamp", "Warm up."), max_tokens=2):
        pass
    tokens, start = 0, time.perf_counter()
    for example in examples:
        prompt = render_prompt(tokenizer, template, "svamp", example.input)
        last = None
        for last in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):
            pass
        tokens += last.generation_tokens
    seconds = time.perf_counter() - start
    del model, tokenizer
    gc.collect()
    mx.clear_cache()
    return tokens / seconds, tokens, seconds


def _stage(model_dir: Path, examples, batch_size: int, max_tokens: int, prefix_cache: bool, work: Path):
    marks = {}

    def on_event(event):
        if isinstance(event, (TeacherLoaded, TeacherReleased)):
            marks[type(event).__name__] = time.perf_counter()

    out = work / f"b{batch_size}-{'cache' if prefix_cache else 'nocache'}.jsonl"
    summary = generate_rationales(examples, "svamp", str(model_dir), out, batch_size=batch_size,
                                  max_tokens=max_tokens, filter="all", prefix_cache=prefix_cache,
                                  on_event=on_event)
    seconds = marks["TeacherReleased"] - marks["TeacherLoaded"]
    return summary.generated_tokens / seconds, summary.generated_tokens, seconds, summary.prompt_tps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--questions-per-slot", type=int, default=1,
                        help="questions per batch slot (2 -> batch 16 answers 32 questions)")
    parser.add_argument("--baseline-questions", type=int, default=3)
    parser.add_argument("--shape", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    parser.add_argument("--model-dir", default=None, help="reuse (or build once into) this folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="teacher-bench-"))
    model_dir = Path(args.model_dir) if args.model_dir else work / "model"
    if not (model_dir / "model.safetensors").is_file():
        start = time.perf_counter()
        build_tiny_llm(model_dir, arch="qwen2", shape=QWEN25_05B if args.shape == "qwen2.5-0.5b" else TINY)
        print(f"built random {args.shape} (float32) in {time.perf_counter() - start:.0f}s at {model_dir}")
    print(f"device {device_name()}, BLAS {blas_status().library}; max tokens {args.max_tokens}")

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    base_tps, base_tokens, base_seconds = _baseline(model_dir, _examples(args.baseline_questions), args.max_tokens)
    print(f"{'one-at-a-time mlx_lm.generate':<34} {base_tps:7.2f} tok/s  ({base_tokens} tokens, {base_seconds:.0f}s)")
    rows = []
    for batch_size in batch_sizes:
        examples = _examples(max(batch_size * args.questions_per_slot, args.baseline_questions))
        for prefix_cache in (True, False):
            tps, tokens, seconds, prompt_tps = _stage(model_dir, examples, batch_size, args.max_tokens,
                                                      prefix_cache, work)
            label = f"stage batch {batch_size:>2}, prefix cache {'on ' if prefix_cache else 'off'}"
            rows.append((batch_size, prefix_cache, tps))
            print(f"{label:<34} {tps:7.2f} tok/s  ({tokens} tokens, {seconds:.0f}s, prompt {prompt_tps:.0f} tok/s)"
                  f"  x{tps / base_tps:.2f} vs one-at-a-time")
    best = max(rows, key=lambda r: r[2])
    top = [r for r in rows if r[0] == max(batch_sizes) and r[1]]
    if top:
        print(f"ratio: stage at batch {top[0][0]} with prefix cache / one-at-a-time = x{top[0][2] / base_tps:.2f} "
              f"(target >= 4)")
    print(f"best: batch {best[0]}, prefix cache {'on' if best[1] else 'off'}: x{best[2] / base_tps:.2f}")


if __name__ == "__main__":
    main()
