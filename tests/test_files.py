"""mlx_distill.files: atomic writes, folder publishing, torn JSONL tails, and the OS writer lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_distill.errors import DistillError
from mlx_distill.files import (
    JsonlWriter,
    append_jsonl,
    check_output_file,
    exclusive_lock,
    lock_holder,
    lock_path_for,
    prepare_output_dir,
    publish_dir,
    read_jsonl_lines,
    read_jsonl_records,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "config.toml"
    write_text_atomic(path, "old")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not json": object()})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_publish_dir_swaps_a_folder_in_whole(tmp_path):
    final = tmp_path / "student"
    final.mkdir()
    (final / "old.txt").write_text("old")
    temp = tmp_path / ".student.tmp"
    temp.mkdir()
    (temp / "new.txt").write_text("new")
    publish_dir(temp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


def test_a_torn_tail_is_left_out_by_readers_and_healed_by_the_next_append(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "cut mid-w')
    assert [number for number, _ in read_jsonl_lines(path)] == [1, 2]
    append_jsonl(path, {"n": 4})
    lines = path.read_text().splitlines()
    assert lines[-1] == '{"n": 4}' and lines[2] == '{"n": 3, "cut mid-w'
    # The torn line stays unparsable, but it is a line of its own now: the new record is readable.
    assert [r["n"] for r in read_jsonl_records(path)] == [1, 2, 4]


def test_jsonl_writer_appends_lines_and_a_missing_file_has_none(tmp_path):
    path = tmp_path / "rationales.jsonl"
    assert list(read_jsonl_lines(path)) == []
    with JsonlWriter(path, durable=True) as writer:
        writer.write_lines([json.dumps({"id": "a"}), json.dumps({"id": "b"})])
        writer.write({"id": "c"})
    assert [r["id"] for r in read_jsonl_records(path)] == ["a", "b", "c"]


_HOLD = """
import sys, time
from mlx_distill.files import exclusive_lock
with exclusive_lock(sys.argv[1], "the output"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(lock: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    lock = lock_path_for(tmp_path / "out.jsonl")
    assert lock.name == ".out.jsonl.lock"
    process = _holder(lock)
    try:
        assert lock_holder(lock) == process.pid
        with pytest.raises(DistillError) as error:
            with exclusive_lock(lock, "the output"):
                pass
        message = str(error.value)
        assert f"pid {process.pid}" in message and "the output" in message and "\n" not in message
    finally:
        process.kill()
        process.wait()


def test_the_kernel_releases_the_lock_of_a_killed_writer(tmp_path):
    lock = tmp_path / "pid"
    process = _holder(lock)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while lock_holder(lock) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock_holder(lock) is None
    with exclusive_lock(lock, "the run"):
        assert lock_holder(lock) == os.getpid()  # flock is per open file: our own probe sees it too
    assert lock_holder(lock) is None


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "a-folder", ["is a folder"]),
    (lambda tmp: tmp / "a-file" / "out.jsonl", ["is a file, not a folder"]),
    (lambda tmp: Path("/proc/out.jsonl"), ["under /proc"]),
    (lambda tmp: Path("/sys/kernel/out.jsonl"), ["under /sys"]),
])
def test_an_output_file_path_is_checked_before_any_work(tmp_path, make, words):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DistillError) as error:
        check_output_file(make(tmp_path), "--out")
    message = str(error.value)
    assert message.startswith("--out ") and "\n" not in message
    for word in words:
        assert word in message


def test_an_output_folder_in_the_way_of_a_file_is_refused_and_a_new_one_is_made(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(DistillError, match="is a file; give a folder"):
        prepare_output_dir(tmp_path / "taken", "--out")
    assert prepare_output_dir(tmp_path / "new" / "run", "--out").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []
