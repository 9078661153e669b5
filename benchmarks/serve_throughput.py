"""Answered questions per second through `mlx-distill serve`: dynamic batching against the same
server answering one request at a time, and against `mlx-distill ask` run once per question.

Everything runs on this machine, measured in one run: a student built here (the demo's shape by
default, ``--shape small`` for a t5-small-like width), its server on a loopback port, and 1, 4
and 16 concurrent clients using the official OpenAI client. Each client asks its next question as
soon as its answer comes (closed loop), for ``--seconds`` per cell. Batched answers are checked
to equal the one-at-a-time answers.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/serve_throughput.py [--seconds 8] [--max-tokens 32] [--ask-per-client 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from mlx_distill.commands.demo import DEMO_STUDENT, _demo_corpus, demo_data_dir
from mlx_distill.platform import blas_status
from mlx_distill.serve import ServeOptions, StudentServer
from mlx_distill.testing.tiny_t5 import build_tiny_t5

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "demo": DEMO_STUDENT,
    "small": {**DEMO_STUDENT, "vocab_size": 2000, "d_model": 256, "d_ff": 1024, "num_layers": 4,
              "num_decoder_layers": 4, "num_heads": 4, "d_kv": 64},
}
CLIENTS = (1, 4, 16)
QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does Tom have now?"
             for a in range(3, 13) for b in range(2, 6)]


def closed_loop(url: str, clients: int, seconds: float, max_tokens: int) -> tuple[int, float, dict[str, str]]:
    """(answers, elapsed seconds, question -> answer) for ``clients`` clients asking for ``seconds``."""
    answers: dict[str, str] = {}
    counts = [0] * clients
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def client(index: int) -> None:
        ask = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
        i = index * 7
        while time.perf_counter() < stop_at:
            question = QUESTIONS[i % len(QUESTIONS)]
            response = ask.chat.completions.create(model="student", max_tokens=max_tokens,
                                                   messages=[{"role": "user", "content": question}])
            with lock:
                answers.setdefault(question, response.choices[0].message.content)
            counts[index] += 1
            i += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(counts), time.perf_counter() - start, answers


def _clients_process(args: tuple[str, int, float, int]) -> tuple[int, float, dict[str, str]]:
    return closed_loop(*args)


def serve_cells(student: Path, max_batch: int, seconds: float, max_tokens: int) -> dict[int, tuple[float, dict]]:
    server = StudentServer(student, ServeOptions(port=0, max_batch=max_batch, queue_size=256), name="student")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    server.started.wait()
    # The clients run in their own process, so their HTTP work does not hold the server's GIL.
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(1) as pool:
            pool.apply(_clients_process, ((server.url, 2, 1.0, max_tokens),))  # warm up the decoding step
            cells = {}
            for clients in CLIENTS:
                done, elapsed, answers = pool.apply(_clients_process, ((server.url, clients, seconds, max_tokens),))
                cells[clients] = (done / elapsed, answers)
        return cells
    finally:
        server.stop()
        thread.join()


def ask_cells(student: Path, per_client: int, max_tokens: int) -> dict[int, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    cells = {}
    for clients in CLIENTS:
        def client(index: int) -> None:
            for k in range(per_client):
                question = QUESTIONS[(index * 7 + k) % len(QUESTIONS)]
                subprocess.run([sys.executable, "-m", "mlx_distill", "ask", str(student), question, "--max-tokens",
                                str(max_tokens)], env=env, check=True, capture_output=True, cwd=ROOT)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        cells[clients] = clients * per_client / (time.perf_counter() - start)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="demo")
    parser.add_argument("--seconds", type=float, default=8.0, help="per server cell (default: 8)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ask-per-client", type=int, default=1, help="`mlx-distill ask` runs per client")
    args = parser.parse_args()
    print(f"BLAS: {blas_status()}; student shape {args.shape}; {args.max_tokens} tokens per answer; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        student = build_tiny_t5(Path(tmp) / "student", corpus=_demo_corpus(demo_data_dir()), **SHAPES[args.shape])
        batched = serve_cells(student, 32, args.seconds, args.max_tokens)
        single = serve_cells(student, 1, args.seconds, args.max_tokens)
        ask = ask_cells(student, args.ask_per_client, args.max_tokens)
    mismatches = sum(batched[c][1][q] != single[c2][1][q] for c in CLIENTS for c2 in CLIENTS
                     for q in batched[c][1] if q in single[c2][1])
    print(f"\n| clients | batched q/s | one at a time q/s | `ask` loop q/s | batched / one at a time | batched / ask |")
    print("|---|---|---|---|---|---|")
    for clients in CLIENTS:
        b, s, a = batched[clients][0], single[clients][0], ask[clients]
        print(f"| {clients} | {b:.1f} | {s:.1f} | {a:.2f} | {b / s:.2f}x | {b / a:.0f}x |")
    print(f"\nanswers that differ between batched and one-at-a-time: {mismatches}")


if __name__ == "__main__":
    main()
