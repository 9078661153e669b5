"""Bad inputs (issue #11): each is refused before any work, with exit code 2, one line that names
the thing and the fix, no traceback, and no partial file left behind.

Commands run in-process through ``mlx_distill.cli.main`` (the same code path as the console script,
without a Python start-up per case); ``run_cli_process`` runs one in a real subprocess where the
process boundary matters. Add a case: build the bad input, ``result = run_cli(...)``, then
``assert_one_line_error(result, "word", ...)`` with the words the line must contain.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_distill.testing.cli_runner import (
    OPENBLAS,
    ROOT,
    assert_one_line_error,
    files_under,
    run_cli,
    run_cli_process,
)
from mlx_distill.data import load_rationales
from mlx_distill.events import Log
from mlx_distill.student import check_student
from mlx_distill.teacher import check_teacher



# ---------------------------------------------------------------------------------------------
# Shared helpers


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def task_folder(root: Path, train: list[dict] | None = None) -> Path:
    """A jsonl task folder with train/validation/test files."""
    rows = train or [{"id": f"t{i}", "input": f"Sam has {i} apples. How many?", "label": str(i)} for i in range(4)]
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "validation.jsonl", [{"id": "v0", "input": "One apple?", "label": "1"}])
    write_jsonl(root / "test.jsonl", [{"id": "s0", "input": "Two apples?", "label": "2"}])
    return root


@pytest.fixture(scope="module")
def teacher(demo_models) -> Path:
    return demo_models["teacher"]


@pytest.fixture(scope="module")
def student(demo_models) -> Path:
    return demo_models["student"]


def _copy_model(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


# Corrupt weight files: (name, bytes from the good file's bytes).
CORRUPTIONS = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "100 bytes": lambda good: good[:100],
    "random bytes": lambda good: os.urandom(4096),
    "header cut": lambda good: good[:20],
}


# ---------------------------------------------------------------------------------------------
# generate


def test_generate_cuts_a_huge_question_and_says_so_once(teacher, tmp_path):
    huge = "how many apples " * 330_000  # 5 MB
    data = task_folder(tmp_path / "data", [{"id": "small", "input": "Sam has 3 apples. How many?", "label": "3"},
                                           {"id": "huge", "input": huge, "label": "1"}])
    out = tmp_path / "r.jsonl"
    started = time.monotonic()
    result = run_cli("generate", "--task", "jsonl", "--data", data, "--teacher", teacher, "--out", out,
                     "--max-tokens", "8", "--filter", "all", "--batch-size", "2")
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert seconds < 60, f"{seconds:.0f}s"
    warnings = [line for line in result.stderr.splitlines() if "were cut to" in line]
    assert len(warnings) == 1 and "1 of 2 questions" in warnings[0], result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["huge", "small"]
    huge_record = next(r for r in records if r["id"] == "huge")
    assert huge_record["prompt_tokens"] < 2048  # the model's context


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_generate_refuses_corrupt_teacher_weights(teacher, tmp_path, corruption):
    broken = _copy_model(teacher, tmp_path / "teacher")
    weights = broken / "model.safetensors"
    weights.write_bytes(CORRUPTIONS[corruption](weights.read_bytes()))
    out = tmp_path / "out" / "r.jsonl"
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", broken,
                     "--out", out)
    assert_one_line_error(result, str(weights), "re-download")
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_check_teacher_and_student_agree_on_corrupt_weights(teacher, student, tmp_path, corruption):
    for name, model, check in (("teacher", teacher, check_teacher), ("student", student, check_student)):
        broken = _copy_model(model, tmp_path / name)
        weights = broken / "model.safetensors"
        weights.write_bytes(CORRUPTIONS[corruption](weights.read_bytes()))
        with pytest.raises(Exception, match="corrupt or truncated.*re-download") as caught:
            check(str(broken))
        assert type(caught.value).__name__ == "DistillError"
        assert str(weights) in str(caught.value)


def test_generate_refuses_a_t5_as_teacher(student, tmp_path):
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", student,
                     "--out", tmp_path / "r.jsonl")
    assert_one_line_error(result, "not a causal LM")


@pytest.mark.parametrize("where", ["folder", "proc", "under a file"])
def test_generate_refuses_a_bad_out_before_the_teacher_loads(teacher, tmp_path, where):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    out = {"folder": tmp_path, "proc": Path("/proc/self/r.jsonl"), "under a file": blocker / "r.jsonl"}[where]
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", teacher,
                     "--out", out)
    assert_one_line_error(result, "--out", str(out))
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("flag,value", [("--limit", "-5"), ("--limit", "0"), ("--batch-size", "0"),
                                        ("--max-tokens", "0"), ("--samples", "0")])
def test_generate_refuses_bad_numbers(teacher, tmp_path, flag, value):
    out = tmp_path / "out" / "r.jsonl"
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", teacher,
                     "--out", out, flag, value)
    assert_one_line_error(result, f"{flag} {value}", "at least 1")
    assert files_under(tmp_path / "out") == []


def test_generate_refuses_an_out_file_that_is_not_utf8(teacher, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(b'{"id": "t0"}\n{"id": "t1", "raw": "\xff\xfe"}\n')
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", teacher,
                     "--out", out)
    assert_one_line_error(result, f"{out}:2", "not UTF-8", "--out")
    assert out.read_bytes() == b'{"id": "t0"}\n{"id": "t1", "raw": "\xff\xfe"}\n'


def test_generate_columns_flag_maps_the_names(teacher, tmp_path):
    rows = [{"id": f"t{i}", "question": f"Sam has {i} apples?", "answer": str(i)} for i in range(4)]
    data = task_folder(tmp_path / "data", rows)
    for split in ("validation", "test"):
        write_jsonl(data / f"{split}.jsonl", [{"id": split, "question": "One?", "answer": "1"}])
    out = tmp_path / "r.jsonl"
    missing = run_cli("generate", "--task", "jsonl", "--data", data, "--teacher", teacher, "--out", out)
    assert_one_line_error(missing, "train.jsonl:1", "'input'", "--columns input=", "task.columns")
    result = run_cli("generate", "--task", "jsonl", "--data", data, "--teacher", teacher, "--out", out,
                     "--columns", "input=question,label=answer", "--max-tokens", "4", "--filter", "all", "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 4


@pytest.mark.parametrize("value,words", [("input", ["KEY=COLUMN"]), ("question=input", ["unknown key 'question'"]),
                                         ("input=a,input=b", ["twice"]), ("input=", ["KEY=COLUMN"])])
def test_columns_flag_refuses_a_malformed_value(teacher, tmp_path, value, words):
    result = run_cli("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--teacher", teacher,
                     "--out", tmp_path / "r.jsonl", "--columns", value)
    assert_one_line_error(result, "--columns", *words)


def test_columns_flag_on_a_builtin_task_is_refused(teacher, tmp_path):
    result = run_cli("generate", "--task", "svamp", "--data", tmp_path, "--teacher", teacher,
                     "--out", tmp_path / "r.jsonl", "--columns", "input=Body")
    assert_one_line_error(result, "--columns", "jsonl and csv")


# ---------------------------------------------------------------------------------------------
# Data files that are not UTF-8


@pytest.mark.parametrize("kind", ["jsonl", "csv", "svamp json"])
def test_non_utf8_data_names_file_line_and_the_fix(teacher, tmp_path, kind):
    data = tmp_path / "data"
    data.mkdir()
    if kind == "jsonl":
        path, task = data / "train.jsonl", "jsonl"
        path.write_bytes(b'{"input": "a", "label": "1"}\n{"input": "caf\xe9", "label": "2"}\n')
        line = 2
    elif kind == "csv":
        path, task = data / "train.csv", "csv"
        path.write_bytes(b"input,label\na,1\nb,2\ncaf\xe9,3\n")
        line = 4
    else:
        path, task = data / "SVAMP.json", "svamp"
        path.write_bytes(b'[\n {"ID": "1", "Body": "x", "Question": "y", "Equation": "1"},\n'
                         b' {"ID": "2", "Body": "caf\xe9", "Question": "y", "Equation": "2"}\n]\n')
        line = 3
    result = run_cli("generate", "--task", task, "--data", data, "--teacher", teacher, "--out", tmp_path / "r.jsonl")
    assert_one_line_error(result, f"{path}:{line}", "not UTF-8", "save the file as UTF-8")


# ---------------------------------------------------------------------------------------------
# train


@pytest.mark.parametrize("flag,value", [("--save-every", "-1"), ("--eval-every", "-1"), ("--warmup-steps", "-1"),
                                        ("--batch-size", "0"), ("--seed", "-1")])
def test_train_refuses_bad_numbers_before_any_work(student, tmp_path, flag, value):
    out = tmp_path / "run"
    result = run_cli("train", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", student,
                     "--out", out, flag, value)
    assert_one_line_error(result, f"{flag} {value}")
    assert not out.exists()


def test_train_refuses_a_llama_folder_as_student(teacher, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", teacher,
                     "--out", out)
    assert_one_line_error(result, "qwen2", "not a T5 student", "flan-t5-small")
    assert not out.exists()


@pytest.mark.parametrize("corruption", ["truncated", "random bytes"])
def test_train_refuses_a_corrupt_student_before_reading_data(student, tmp_path, corruption):
    broken = _copy_model(student, tmp_path / "student")
    weights = broken / "model.safetensors"
    weights.write_bytes(CORRUPTIONS[corruption](weights.read_bytes()))
    out = tmp_path / "run"
    # The data path does not exist: the student is refused first.
    result = run_cli("train", "--task", "jsonl", "--data", tmp_path / "no-data", "--student", broken, "--out", out)
    assert_one_line_error(result, str(weights), "re-download")
    assert not out.exists()


def test_train_refuses_a_student_folder_without_config(student, tmp_path):
    broken = _copy_model(student, tmp_path / "student")
    (broken / "config.json").unlink()
    result = run_cli("train", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", broken,
                     "--out", tmp_path / "run")
    assert_one_line_error(result, "no config.json", str(broken))


def test_a_hub_id_not_in_the_cache_is_left_for_loading(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert check_student("someone/not-cached-t5") is None
    assert check_teacher("someone/not-cached-llm") is None


@pytest.mark.parametrize("where", ["file", "under a file", "proc"])
def test_train_refuses_a_bad_out_before_loading_the_student(student, tmp_path, where):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    out = {"file": blocker, "under a file": blocker / "run", "proc": Path("/proc/self/run")}[where]
    result = run_cli("train", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", student,
                     "--out", out)
    assert_one_line_error(result, "training output folder", str(out))
    assert blocker.read_text() == "x"


def test_train_columns_hint_names_the_flag_and_the_toml_key(student, tmp_path):
    rows = [{"id": f"t{i}", "question": "q", "answer": "a"} for i in range(4)]
    result = run_cli("train", "--task", "jsonl", "--data", task_folder(tmp_path / "data", rows), "--student", student,
                     "--out", tmp_path / "run")
    assert_one_line_error(result, "'input'", "--columns input=", "task.columns")


def test_duplicate_rationale_ids_warn_once_and_the_last_record_wins(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"id": "a", "rationale": "first a", "answer": "1"},
        {"id": "b", "rationale": "only b", "answer": "2"},
        {"id": "a", "rationale": "second a", "answer": "1"},
        {"id": "a", "rationale": "third a", "answer": "1"},
    ])
    events: list = []
    records = load_rationales(path, on_event=events.append)
    assert {k: r.rationale for k, r in records.items()} == {"a": "third a", "b": "only b"}
    assert len(events) == 1 and isinstance(events[0], Log) and events[0].level == "warning"
    assert str(path) in events[0].message and "1 ids" in events[0].message and "2 repeated lines" in events[0].message


def test_rationale_file_without_duplicates_says_nothing(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "rationale": "r", "answer": "1"}])
    events: list = []
    load_rationales(path, on_event=events.append)
    assert events == []


# ---------------------------------------------------------------------------------------------
# eval


@pytest.mark.parametrize("where", ["folder", "under a file", "proc"])
def test_eval_refuses_a_bad_out_and_leaves_no_temp_file(student, tmp_path, where):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    (tmp_path / "a-folder").mkdir()
    out = {"folder": tmp_path / "a-folder", "under a file": blocker / "p.jsonl",
           "proc": Path("/proc/self/p.jsonl")}[where]
    before = files_under(tmp_path)
    result = run_cli("eval", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", student,
                     "--out", out)
    assert_one_line_error(result, "--out", str(out))
    assert [f for f in files_under(tmp_path) if f not in before and not f.startswith("data")] == []


@pytest.mark.parametrize("flag,value", [("--limit", "-1"), ("--batch-size", "0"), ("--seed", "-1")])
def test_eval_refuses_bad_numbers(student, tmp_path, flag, value):
    result = run_cli("eval", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", student,
                     "--out", tmp_path / "p.jsonl", flag, value)
    assert_one_line_error(result, f"{flag} {value}")
    assert not (tmp_path / "p.jsonl").exists()


def test_eval_refuses_a_llama_student(teacher, tmp_path):
    result = run_cli("eval", "--task", "jsonl", "--data", task_folder(tmp_path / "data"), "--student", teacher,
                     "--out", tmp_path / "p.jsonl")
    assert_one_line_error(result, "not a T5 student")


# ---------------------------------------------------------------------------------------------
# One real process: the console script's exit code and output, not only the in-process path.


def test_corrupt_teacher_in_a_real_process(teacher, tmp_path):
    broken = _copy_model(teacher, tmp_path / "teacher")
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    result = run_cli_process("generate", "--task", "jsonl", "--data", task_folder(tmp_path / "data"),
                             "--teacher", broken, "--out", tmp_path / "r.jsonl")
    assert_one_line_error(result, "model.safetensors", "re-download")


# ---------------------------------------------------------------------------------------------
# chat, demo, run names


def _chat(student: Path, stdin: bytes, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    return subprocess.run([sys.executable, "-m", "mlx_distill", "chat", str(student), *extra], input=stdin,
                          capture_output=True, env=env, timeout=120)


def test_chat_cuts_a_huge_question_says_so_once_and_answers(student):
    started = time.monotonic()
    done = _chat(student, ("how many apples " * 330_000).encode() + b"\nTwo apples?\n")
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("is longer than the student reads") == 1 and "question 1 " in stderr
    assert len(done.stdout.decode().splitlines()) == 2  # both questions answered
    assert time.monotonic() - started < 60


def test_chat_refuses_a_line_that_is_not_utf8_and_answers_the_others(student):
    done = _chat(student, b"caf\xe9 apples?\nTwo apples?\n")
    stderr = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip() == ("error: question 1 is not UTF-8 text (byte 0xe9 at column 4); skipped, "
                              "send UTF-8 text")
    assert len(done.stdout.decode().splitlines()) == 1  # the good question is still answered


def test_chat_refuses_a_bad_max_tokens(student):
    assert_one_line_error(run_cli("chat", student, "--max-tokens", "0"), "--max-tokens 0", "at least 1")


@pytest.mark.parametrize("name", ["../../escape", "a\nb", "   ", "x" * 300])
def test_demo_refuses_a_name_that_is_not_a_plain_folder_name(tmp_path, name):
    runs = tmp_path / "deep" / "runs"
    assert_one_line_error(run_cli("demo", "--name", name, "--runs-dir", runs), "--name")
    assert files_under(tmp_path) == []  # nothing built anywhere, inside or two levels above


def test_a_wrong_type_in_a_config_is_one_line_through_the_cli(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[task]\nname = "jsonl"\ndata = "x.jsonl"\n[train]\nmax_steps = "6"\n')
    assert_one_line_error(run_cli("run", config), "train.max_steps", "'6'", "an integer")
    assert files_under(tmp_path) == ["c.toml"]


# ---------------------------------------------------------------------------------------------
# a full disk during the run's teacher and train stages


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` at ``folder`` (root only: tests and CI here run as root)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage, size, limit, max_tokens", [("teacher", "40k", 96, 64), ("train", "48k", 16, 16)])
def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_finishes(teacher, student, tmp_path, stage, size,
                                                                           limit, max_tokens):
    import tomli_w

    from mlx_distill.commands.demo import demo_data_dir
    from mlx_distill.files import lock_holder, read_jsonl_records
    from mlx_distill.pipeline import read_run

    with small_disk(tmp_path / "disk", size) as disk:
        config = tmp_path / "run.toml"
        config.write_text(tomli_w.dumps({
            "name": "full", "runs_dir": str(disk / "runs"), "task": {"name": "jsonl", "data": str(demo_data_dir())},
            "teacher": {"model": str(teacher), "batch_size": 8, "max_tokens": max_tokens, "limit": limit},
            "train": {"student": str(student), "rationale_source": "human", "lr": 3e-3, "batch_size": 16,
                      "max_steps": 4, "eval_every": 4, "max_eval_examples": 8, "log_every": 2},
        }))
        first = run_cli_process("run", config, "--quiet", timeout=300)
        assert "Traceback" not in first.stdout + first.stderr, first.stderr
        assert first.returncode == 2, first.stderr
        last = first.stderr.strip().splitlines()[-1]
        assert last.startswith("error: disk full while writing in ") and "free some space and rerun" in last
        run = disk / "runs" / "full"
        state = json.loads((run / "state.json").read_text())["stages"]
        assert state[stage]["status"] == "failed"
        assert [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name] == []
        assert lock_holder(run / "pid") is None and read_run(run).status != "running"
        kept = read_jsonl_records(run / "rationales.jsonl")  # whole lines: the disk filled mid-line

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        second = run_cli_process("run", config, "--quiet", timeout=300)
        assert second.returncode == 0, second.stderr
        records = [json.loads(line) for line in (run / "rationales.jsonl").read_text().splitlines()]
        assert len({r["id"] for r in records}) == len(records) == limit
        by_id = {r["id"]: r for r in records}
        assert all(by_id[r["id"]] == r for r in kept)  # finished work survived the full disk
        for line in (run / "events.jsonl").read_text().splitlines():
            json.loads(line)  # the log cut by the full disk was healed: every line parses


_HOLD_LOCK = """
import sys, time
from mlx_distill.files import exclusive_lock
with exclusive_lock(sys.argv[1], "held"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_train_into_the_same_out_is_refused_with_the_pid(student, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out / ".lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        data = task_folder(tmp_path / "task")
        result = run_cli("train", "--task", "jsonl", "--data", data, "--student", student, "--out", out,
                         "--max-steps", "1")
        assert_one_line_error(result, f"pid {holder.pid}", str(out))
        assert files_under(out) == [".lock"]  # nothing written by the refused run
    finally:
        holder.kill()
        holder.wait()
