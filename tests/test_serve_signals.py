"""Ctrl-C and `mlx-distill serve`, in a real process: while the student loads, while a client is
stalled mid-body, and twice under load. Never an abort, a traceback or a run's resume hint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlx_distill.testing.cli_runner import OPENBLAS, ROOT

pytestmark = pytest.mark.slow


def _start(student: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", MLX_DISTILL_NO_BLAS_REEXEC="1")
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    return subprocess.Popen([sys.executable, "-m", "mlx_distill", "serve", str(student), "--port", "0"], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)


def _url(process: subprocess.Popen) -> str:
    assert "loading the student" in process.stderr.readline()
    line = process.stderr.readline()
    assert "serving" in line, line
    return line.split(" at ")[1].split("/v1")[0]


def _clean(stderr: str) -> None:
    for word in ("Traceback", "CancelledError", "terminate called", "rerun the same command"):
        assert word not in stderr, stderr


def test_ctrl_c_while_the_student_loads_stops_cleanly(demo_models):
    process = _start(demo_models["student"])
    try:
        assert "loading the student" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        stderr = process.stderr.read()
        _clean(stderr)
        assert code == 130 and "stopped before it served" in stderr, (code, stderr)
    finally:
        if process.poll() is None:
            process.kill()


def test_ctrl_c_with_a_client_stalled_mid_body_stops(demo_models):
    process = _start(demo_models["student"])
    try:
        url = _url(process)
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"model\": ")
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        assert b"503" in stalled.recv(4096).split(b"\r\n")[0]
        _clean(process.stderr.read())
    finally:
        if process.poll() is None:
            process.kill()


def test_double_ctrl_c_under_load_answers_every_request_in_json(demo_models):
    process = _start(demo_models["student"])
    try:
        url = _url(process)
        results: list[tuple[int, str]] = []

        def ask(stream: bool) -> None:
            body = {"model": "student", "messages": [{"role": "user", "content": "Is a bat a bird? Explain."}],
                    "max_tokens": 512, "explain": True, "stream": stream}
            try:
                response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
                results.append((response.status_code, response.text))
            except httpx.HTTPError as error:  # the connection closed before a response: not an answer
                results.append((0, str(error)))

        name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        assert name == "student"
        clients = [threading.Thread(target=ask, args=(i % 2 == 0,)) for i in range(24)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health").json()["in_flight"] < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.wait(30)
        for client in clients:
            client.join(30)
        _clean(process.stderr.read())
        assert len(results) == 24
        for status, text in results:
            if status == 200 or (status == 0 and "refused" in text):  # answered, or came after the stop
                continue
            assert status == 503, (status, text)
            assert json.loads(text)["error"]["code"] == "server_shutdown"
    finally:
        if process.poll() is None:
            process.kill()
