"""Answered questions per second through `mlx-distill serve`: continuous batching against the same
server answering one request at a time, and against `mlx-distill ask` run once per question; and
the short clients' latency when one client asks for long rationales beside them.

Everything runs on this machine, in one run: a student built here (the demo's shape by default,
``--shape small`` for a t5-small-like width), its server on a loopback port, and 1, 4 and 16
concurrent clients using the official OpenAI client. Each client asks its next question as soon
as its answer comes (closed loop), for ``--seconds`` per cell. Every server cell runs
``--repeats`` times and prints the median with the range; each batched cell is followed by the
same cell one at a time, and the ratio is taken pair by pair. Answers are checked to equal the
one-at-a-time answers.

Mixed load: 15 clients ask short questions while one asks with ``"explain": true`` and
``--long-max-tokens``; the short clients' median latency is compared with the same 15 clients
alone (goal: within 1.5x).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/serve_throughput.py [--seconds 8] [--repeats 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai

from mlx_distill.commands.demo import DEMO_STUDENT, _demo_corpus, demo_data_dir
from mlx_distill.methods import RATIONALE_MAX_TOKENS, predict_prompt
from mlx_distill.platform import blas_environment, blas_status
from mlx_distill.serve import ServeOptions, StudentServer
from mlx_distill.student import ContinuousDecoder, RowRequest, encode_prompts, generate_tokens, load_student
from mlx_distill.testing.tiny_t5 import build_tiny_t5

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "demo": DEMO_STUDENT,
    "small": {**DEMO_STUDENT, "vocab_size": 2000, "d_model": 256, "d_ff": 1024, "num_layers": 4,
              "num_decoder_layers": 4, "num_heads": 4, "d_kv": 64},
}
CLIENTS = (1, 4, 16)
MIXED_SHORT = 15
QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does Tom have now?"
             for a in range(3, 13) for b in range(2, 6)]


LONG = "Tom has 3 apples and buys 5 more. How many apples does Tom have now? Explain every step."


@dataclass
class Cell:
    """What one closed-loop run measured."""

    answers: int  # short answers
    seconds: float
    latencies: list[float]  # of the short answers
    texts: dict[str, str]  # question -> short answer
    long_answers: int = 0

    @property
    def rate(self) -> float:
        return self.answers / self.seconds


def closed_loop(url: str, clients: int, seconds: float, max_tokens: int, long_max_tokens: int = 0) -> Cell:
    """``clients`` short clients asking for ``seconds`` (and, with ``long_max_tokens``, one long one)."""
    texts: dict[str, str] = {}
    latencies: list[float] = []
    counts = [0] * (clients + 1)
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def client(index: int) -> None:
        ask = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
        i = index * 7
        while time.perf_counter() < stop_at:
            if index == clients:  # the long client
                ask.chat.completions.create(model="student", max_tokens=long_max_tokens, extra_body={"explain": True},
                                            messages=[{"role": "user", "content": LONG}])
                counts[index] += 1
                continue
            question = QUESTIONS[i % len(QUESTIONS)]
            asked = time.perf_counter()
            response = ask.chat.completions.create(model="student", max_tokens=max_tokens,
                                                   messages=[{"role": "user", "content": question}])
            with lock:
                latencies.append(time.perf_counter() - asked)
                texts.setdefault(question, response.choices[0].message.content)
            counts[index] += 1
            i += 1

    with ThreadPoolExecutor(clients + 1) as pool:
        list(pool.map(client, range(clients + (1 if long_max_tokens else 0))))
    return Cell(sum(counts[:clients]), time.perf_counter() - start, latencies, texts, counts[clients])


def _clients_process(args: tuple) -> Cell:
    return closed_loop(*args)


def serve_cells(student: Path, seconds: float, max_tokens: int, repeats: int, uniform: list[tuple[int, int]],
                mixed: list[tuple[int, int]]) -> tuple[dict, dict]:
    """Each cell ``repeats`` times against two servers of the same student, one batching (32 rows)
    and one answering one request at a time; each batched cell is followed by the same cell one
    at a time, so the machine's drift (this kind of machine's speed varies from minute to minute)
    falls on both sides of every ratio."""
    servers = {rows: StudentServer(student, ServeOptions(port=0, max_batch=rows, queue_size=256), name="student")
               for rows in (32, 1)}
    threads = [threading.Thread(target=server.run, daemon=True) for server in servers.values()]
    for thread in threads:
        thread.start()
    for server in servers.values():
        server.started.wait()
    # The clients run in their own process, so their HTTP work does not hold the server's GIL.
    context = multiprocessing.get_context("spawn")
    batched: dict[tuple[int, int], list[Cell]] = {cell: [] for cell in uniform + mixed}
    single: dict[tuple[int, int], list[Cell]] = {cell: [] for cell in uniform}
    try:
        with context.Pool(1) as pool:
            for server in servers.values():
                pool.apply(_clients_process, ((server.url, 2, 1.0, max_tokens),))  # warm up
            for _ in range(repeats):
                for clients, long_tokens in uniform + mixed:
                    batched[(clients, long_tokens)].append(pool.apply(
                        _clients_process, ((servers[32].url, clients, seconds, max_tokens, long_tokens),)))
                    if (clients, long_tokens) in single:
                        single[(clients, long_tokens)].append(pool.apply(
                            _clients_process, ((servers[1].url, clients, seconds, max_tokens, long_tokens),)))
        return batched, single
    finally:
        for rows, server in servers.items():
            server.stop()
            print(f"  server (max_batch {rows}): {server.summary()}", flush=True)
        for thread in threads:
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


def decoder_cells(student: Path, rows: int, max_tokens: int, repeats: int) -> list[float]:
    """Answers/s of the step-level decoder over those of closed batches (`generate_tokens`), in this
    process without HTTP: ``rows`` rows at a time, each replaced the step it ends, ``4 * rows`` answers."""
    model, tokenizer = load_student(student)
    prompts = [predict_prompt(q) for q in QUESTIONS]
    ids, _ = encode_prompts(tokenizer, prompts)
    total = 4 * rows

    def closed() -> float:
        start = time.perf_counter()
        for first in range(0, total, rows):
            generate_tokens(model, tokenizer, [prompts[i % len(prompts)] for i in range(first, first + rows)],
                            max_tokens=max_tokens, batch_size=rows)
        return total / (time.perf_counter() - start)

    def continuous() -> float:
        decoder, started, done = ContinuousDecoder(model), rows, 0
        start = time.perf_counter()
        decoder.add([RowRequest(i, ids[i % len(ids)], max_tokens) for i in range(rows)])
        while decoder.live:
            ended = sum(row.finish_reason is not None for row in decoder.step())
            done += ended
            more = [RowRequest(started + j, ids[(started + j) % len(ids)], max_tokens)
                    for j in range(min(ended, total - started))]
            started += len(more)
            decoder.add(more)
        return done / (time.perf_counter() - start)

    closed(), continuous()  # compile both
    return [continuous() / closed() for _ in range(repeats)]


def _spread(values: list[float], fmt: str = ".1f", unit: str = "") -> str:
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]:{fmt}}{unit}"
    return f"{statistics.median(values):{fmt}}{unit} ({values[0]:{fmt}}–{values[-1]:{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="demo")
    parser.add_argument("--seconds", type=float, default=8.0, help="per server cell (default: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each server cell (default: 3)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--long-max-tokens", type=int, default=256, help="the explaining client's max_tokens")
    parser.add_argument("--ask-per-client", type=int, default=1, help="`mlx-distill ask` runs per client")
    args = parser.parse_args()
    # OpenBLAS reads these when it loads: run with the environment `mlx-distill serve` gives itself.
    missing = blas_environment(["serve"])
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; BLAS: {blas_status()}; student shape {args.shape}; "
          f"{args.max_tokens} tokens per answer; {os.cpu_count()} CPUs; OPENBLAS_NUM_THREADS "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; OPENBLAS_THREAD_TIMEOUT "
          f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset')}; load average {load:.1f} at start")
    uniform = [(c, 0) for c in CLIENTS]
    mixed = [(MIXED_SHORT, 0), (MIXED_SHORT, args.long_max_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        student = build_tiny_t5(Path(tmp) / "student", corpus=_demo_corpus(demo_data_dir()), **SHAPES[args.shape])
        batched, single = serve_cells(student, args.seconds, args.max_tokens, args.repeats, uniform, mixed)
        ask = ask_cells(student, args.ask_per_client, args.max_tokens)
        decoding = decoder_cells(student, 16, args.max_tokens, args.repeats)
    reference = {q: t for cells in single.values() for cell in cells for q, t in cell.texts.items()}
    mismatches = sum(t != reference[q] for cells in batched.values() for cell in cells for q, t in cell.texts.items()
                     if q in reference)
    print(f"\nmedian (min–max) of {args.repeats} runs of {args.seconds:.0f} s per server cell\n")
    print("| clients | continuous batching q/s | one at a time q/s | `ask` loop q/s | batched / one at a time "
          "| batched / ask |")
    print("|---|---|---|---|---|---|")
    for clients in CLIENTS:
        b = [c.rate for c in batched[(clients, 0)]]
        s = [c.rate for c in single[(clients, 0)]]
        ratios = [x / y for x, y in zip(b, s)]
        print(f"| {clients} | {_spread(b)} | {_spread(s)} | {ask[clients]:.2f} | {_spread(ratios, '.2f', 'x')} "
              f"| {statistics.median(b) / ask[clients]:.0f}x |")
    alone = [statistics.median(c.latencies) for c in batched[(MIXED_SHORT, 0)]]
    beside = [statistics.median(c.latencies) for c in batched[(MIXED_SHORT, args.long_max_tokens)]]
    longs = [c.long_answers for c in batched[(MIXED_SHORT, args.long_max_tokens)]]
    print(f"\nmixed load: {MIXED_SHORT} short clients ({args.max_tokens} tokens) beside one explaining client "
          f"(max_tokens {args.long_max_tokens} + a rationale of up to {RATIONALE_MAX_TOKENS}; "
          f"{_spread(longs, '.0f')} long answers per cell)")
    print(f"short clients' median latency: alone {_spread([x * 1000 for x in alone], '.0f', ' ms')}, "
          f"beside the long client {_spread([x * 1000 for x in beside], '.0f', ' ms')}, "
          f"ratio {_spread([b / a for a, b in zip(alone, beside)], '.2f', 'x')} (goal: at most 1.5x)")
    print(f"\ndecoding only (no HTTP, 16 rows, {args.max_tokens} tokens): step-level decoder / closed batches "
          f"{_spread(decoding, '.2f', 'x')} answers/s")
    print(f"\nanswers that differ between batched and one-at-a-time: {mismatches}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (above {os.cpu_count()}: other work shared the CPUs)")


if __name__ == "__main__":
    main()
