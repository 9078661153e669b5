"""`try --adopt` edits any valid config safely (dotted keys, paths needing escapes, read-only files),
`try` stopped by Ctrl-C exits 130, and a too-small `--n` names its own limit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.config import load_config
from mlx_distill.errors import DistillError
from mlx_distill.prompt_lab import adopt_prompt
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]


def _dotted_config(tmp_path: Path, teacher: Path) -> Path:
    path = tmp_path / "dotted.toml"
    path.write_text(f'name = "lab"\nruns_dir = {tomli_w.dumps({"x": str(tmp_path / "runs")})[4:]}'
                    f'teacher.model = {tomli_w.dumps({"x": str(teacher)})[4:]}teacher.batch_size = 8\n'
                    f'teacher.max_tokens = 12\n\n[task]\nname = "jsonl"\n'
                    f'data = {tomli_w.dumps({"x": str(demo_data_dir())})[4:]}\n'
                    f'[train]\nrationale_source = "human"\n')
    load_config(path)  # a valid config to start from
    return path


def test_adopt_into_dotted_teacher_keys_keeps_the_config_valid(tmp_path, demo_models):
    path = _dotted_config(tmp_path, demo_models["teacher"])
    prompt = tmp_path / 'odd "name" \\ here.txt'
    prompt.write_text("Answer.\n---\nQ: {input}\nA:")
    adopt_prompt(path, prompt)
    assert load_config(path).teacher.prompt_file == str(prompt.resolve())
    assert "[teacher]" not in path.read_text()
    adopt_prompt(path, prompt)  # again: replaced, not added twice
    assert path.read_text().count("prompt_file") == 1 and load_config(path).teacher.model == str(demo_models["teacher"])


def test_adopt_a_run_dir_with_quotes_and_backslashes_into_a_teacher_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('# mine\n[teacher]\nmodel = "x"\n\n[task]\nname = "jsonl"\n')
    prompt = tmp_path / 'a"b\\c' / "p.txt"
    prompt.parent.mkdir()
    prompt.write_text("Answer.\n---\nQ: {input}\nA:")
    adopt_prompt(path, prompt)
    import tomllib

    data = tomllib.loads(path.read_text())
    assert data["teacher"] == {"model": "x", "prompt_file": str(prompt.resolve())}
    assert path.read_text().startswith("# mine\n")


def test_adopt_an_inline_teacher_table_is_refused_and_the_file_kept(tmp_path):
    path = tmp_path / "c.toml"
    text = 'teacher = { model = "x" }\n'
    path.write_text(text)
    with pytest.raises(DistillError, match="add it by hand under \\[teacher\\]"):
        adopt_prompt(path, tmp_path / "p.txt")
    assert path.read_text() == text


def test_a_config_that_cannot_be_written_is_one_line_and_kept(tmp_path, demo_models):
    # A name of 255 characters: the atomic write's temporary file name is too long for the file
    # system, a real write failure that also happens as root (a read-only file would not fail then).
    path = _dotted_config(tmp_path, demo_models["teacher"]).rename(tmp_path / ("c" * 250 + ".toml"))
    text = path.read_text()
    with pytest.raises(DistillError, match="cannot write config .*make it writable"):
        adopt_prompt(path, tmp_path / "p.txt")
    assert path.read_text() == text


def test_too_small_n_names_the_sample_limit(tmp_path, demo_models):
    path = _dotted_config(tmp_path, demo_models["teacher"])
    line = assert_one_line_error(run_cli("try", path, "--n", "2"), "--n 2 is too small", "--n 4")
    assert "validation" not in line


def test_a_binary_prompt_file_is_one_line(tmp_path, demo_models):
    path = _dotted_config(tmp_path, demo_models["teacher"])
    binary = tmp_path / "p.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(run_cli("try", path, "--prompt-file", binary), str(binary), "not UTF-8 text")
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"Answer.\x00\n---\nQ: {input}\nA:")
    assert_one_line_error(run_cli("try", path, "--prompt-file", nul), "not UTF-8 text")


def test_ctrl_c_during_a_trial_exits_130_and_keeps_the_answers(tmp_path, demo_models):
    path = _dotted_config(tmp_path, demo_models["teacher"])
    text = path.read_text().replace("teacher.max_tokens = 12", "teacher.max_tokens = 200").replace(
        "teacher.batch_size = 8", "teacher.batch_size = 2")
    path.write_text(text)
    records = tmp_path / "runs" / "lab" / "prompt-lab" / "records"
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", "try", str(path), "--n", "40", "--quiet"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not any(
            f.stat().st_size for f in (records.glob("*.jsonl") if records.is_dir() else [])):
        time.sleep(0.02)
    assert process.poll() is None, "the trial ended before it could be stopped; make it longer"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "resume" in stderr
