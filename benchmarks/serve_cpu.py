"""CPU a `mlx-distill serve` process spends per answer, with OpenBLAS's idle threads spinning
(``OPENBLAS_THREAD_TIMEOUT`` 28, OpenBLAS's default) against sleeping at once (4, what `serve` sets).

The server runs as the CLI runs it, in its own process; the clients (the official `openai` client,
closed loop, 16 at a time by default) run in another. Both processes' CPU time, and each server
thread's, is read from /proc (Linux only) around each cell; the settings are interleaved,
``--repeats`` rounds.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 HF_HUB_OFFLINE=1 \\
        .venv/bin/python benchmarks/serve_cpu.py [--clients 16] [--seconds 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_throughput import closed_loop

from mlx_distill.commands.demo import DEMO_STUDENT, _demo_corpus, demo_data_dir
from mlx_distill.platform import SERVING_BLAS_ENV
from mlx_distill.testing.tiny_t5 import build_tiny_t5

ROOT = Path(__file__).resolve().parents[1]
# OpenBLAS's default, and what `serve` sets
TIMEOUTS = ("28", SERVING_BLAS_ENV["OPENBLAS_THREAD_TIMEOUT"])


def cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int) -> dict[str, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended
            pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell(pool, student: Path, max_batch: int, timeout: str, clients: int, seconds: float) -> str:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OPENBLAS_THREAD_TIMEOUT=timeout)
    server = subprocess.Popen([sys.executable, "-m", "mlx_distill", "serve", str(student), "--port", str(port),
                               "--name", "student", "--max-batch", str(max_batch), "--queue-size", "256"],
                              env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        while "serving" not in server.stderr.readline():
            if server.poll() is not None:
                raise SystemExit(f"serve exited with {server.returncode}")
        url = f"http://127.0.0.1:{port}"
        pool.apply(closed_loop, (url, 2, 1.0, 32))  # warm up
        client_pid = pool.apply(os.getpid)
        threads = thread_seconds(server.pid)
        server_stat, client_stat = f"/proc/{server.pid}/stat", f"/proc/{client_pid}/stat"
        server_cpu, client_cpu, start = cpu_seconds(server_stat), cpu_seconds(client_stat), time.perf_counter()
        result = pool.apply(closed_loop, (url, clients, seconds, 32))
        wall = time.perf_counter() - start
        server_cpu, client_cpu = cpu_seconds(server_stat) - server_cpu, cpu_seconds(client_stat) - client_cpu
        busiest = sorted((t - threads.get(tid, 0.0) for tid, t in thread_seconds(server.pid).items()), reverse=True)
    finally:
        server.terminate()
        server.wait(60)
    return (f"| {max_batch} | {timeout} | {result.rate:.1f} | {server_cpu / wall:.2f} | "
            f"{1000 * server_cpu / result.answers:.1f} | {' / '.join(f'{t / wall:.2f}' for t in busiest[:4])} "
            f"| {client_cpu / wall:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs; {args.clients} clients, 32 tokens per answer; "
          f"load average {os.getloadavg()[0]:.1f} at start\n")
    print("| max_batch | OPENBLAS_THREAD_TIMEOUT | questions/s | server cores | server CPU ms per answer "
          "| server's busiest threads, cores | client cores |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("spawn").Pool(1) as pool:
        student = build_tiny_t5(Path(tmp) / "student", corpus=_demo_corpus(demo_data_dir()), **DEMO_STUDENT)
        for _ in range(args.repeats):
            for max_batch in (32, 1):
                for timeout in TIMEOUTS:
                    print(cell(pool, student, max_batch, timeout, args.clients, args.seconds), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
