"""Issue #23's loose ends: what a code review and a hostile sweep found (see each section).

Fast: fake run folders (``testing.ui_fakes.make_run``) and tiny real-format T5s; nothing here
trains or measures a student.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_distill.errors import DistillError
from mlx_distill.files import FOLDER_MARKER, check_publish_target, folder_kind, publish_dir
from mlx_distill.testing.cli_runner import assert_one_line_error, files_under, run_cli
from mlx_distill.testing.ui_fakes import make_run

# ---- item 3: `export --out` never replaces what is not an earlier export ------------------------


@pytest.fixture()
def run(tmp_path) -> Path:
    return make_run(tmp_path / "runs", "demo")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files_under(folder) if (folder / name).is_file()}


def test_export_out_refuses_a_users_folder_and_keeps_its_files(run, tmp_path):
    important = tmp_path / "important"
    important.mkdir()
    (important / "notes.txt").write_text("my notes")
    assert_one_line_error(run_cli("export", run, "--out", important), str(important), "not an earlier")
    assert files_under(important) == ["notes.txt"]
    assert (important / "notes.txt").read_text() == "my notes"


def test_export_out_refuses_the_run_the_runs_folder_a_file_and_system_paths(run, tmp_path, monkeypatch):
    before = _snapshot(tmp_path)
    note = tmp_path / "note.txt"
    note.write_text("keep")
    for out in (run, run.parent, run / "student", note, "/proc/x"):
        assert_one_line_error(run_cli("export", run, "--out", out), f"--out {out}")
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "file").write_text("x")
    monkeypatch.chdir(here)
    assert_one_line_error(run_cli("export", run, "--out", "."), "--out .")
    assert (here / "file").read_text() == "x"
    assert note.read_text() == "keep"
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # the run is untouched


def test_check_publish_target_refuses_devices_and_links(tmp_path):
    with pytest.raises(DistillError, match="under /dev"):
        check_publish_target("/dev/null", "mlx-distill export", "--out")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(DistillError, match="is a link"):
        check_publish_target(tmp_path / "link", "mlx-distill export", "--out")
    with pytest.raises(DistillError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("")
        check_publish_target(tmp_path / "f" / "x", "mlx-distill export", "--out")


def test_export_out_replaces_an_earlier_export_and_writes_a_new_path(run, tmp_path):
    out = tmp_path / "shared" / "student"
    first = run_cli("export", run, "--out", out)
    assert first.returncode == 0, first.stderr
    assert folder_kind(out) == "mlx-distill export"
    (out / "README.md").write_text("stale card")
    again = run_cli("export", run, "--out", out)
    assert again.returncode == 0, again.stderr
    assert (out / "README.md").read_text() != "stale card"
    assert sorted(p.name for p in out.parent.iterdir()) == ["student"]  # nothing left beside it


def test_an_unmarked_export_in_the_runs_own_export_folder_is_replaced(run):
    legacy = run / "export" / "student"  # written before exports were marked
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text('{"model_type": "t5"}')
    (legacy / "README.md").write_text("old card")
    result = run_cli("export", run)
    assert result.returncode == 0, result.stderr
    assert (legacy / "README.md").read_text() != "old card"
    assert folder_kind(legacy) == "mlx-distill export"


def test_publish_dir_with_a_kind_leaves_a_users_folder_and_its_old_name_alone(tmp_path):
    user = tmp_path / "models"
    user.mkdir()
    (user / "mine.bin").write_bytes(b"1")
    stale = tmp_path / ".models.old"  # a user's folder that happens to have publish_dir's aside name
    stale.mkdir()
    (stale / "keep.txt").write_text("keep")
    temp = tmp_path / "temp"
    temp.mkdir()
    with pytest.raises(DistillError, match="not an earlier mlx-distill export"):
        publish_dir(temp, user, kind="mlx-distill export")
    assert (user / "mine.bin").read_bytes() == b"1"
    # An earlier export is replaced; the user's ".models.old" survives the swap.
    (user / "mine.bin").unlink()
    (user / FOLDER_MARKER).write_text(json.dumps({"kind": "mlx-distill export"}))
    (temp / "new.txt").write_text("new")
    publish_dir(temp, user, kind="mlx-distill export")
    assert sorted(p.name for p in user.iterdir()) == [FOLDER_MARKER, "new.txt"]
    assert (stale / "keep.txt").read_text() == "keep"


def test_save_student_never_replaces_a_folder_that_is_not_a_student(tiny_student, tmp_path):
    from mlx_distill.student import load_student, save_student

    model, tokenizer = load_student(tiny_student)
    taken = tmp_path / "student"
    taken.mkdir()
    (taken / "thesis.tex").write_text("years of work")
    with pytest.raises(DistillError, match="the student folder .* not an earlier mlx-distill student"):
        save_student(model, tokenizer, taken)
    assert files_under(taken) == ["thesis.tex"]
    assert files_under(tmp_path) == ["student", "student/thesis.tex"]  # no temp folder left
    fresh = save_student(model, tokenizer, tmp_path / "fresh")
    save_student(model, tokenizer, fresh)  # its own earlier output is replaced
    assert folder_kind(fresh) == "mlx-distill student"


# ---- item 9 and item 10 (config.json): a student folder that cannot answer is refused at load ------


def _copy_student(source: Path, folder: Path, drop: tuple[str, ...] = (), **config_changes) -> Path:
    import shutil

    shutil.copytree(source, folder)
    for name in drop:
        (folder / name).unlink(missing_ok=True)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_changes)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_student_without_tokenizer_files_is_refused_not_answered_empty(tiny_student, tmp_path):
    folder = _copy_student(tiny_student, tmp_path / "no-tokenizer", drop=("spiece.model", "tokenizer.json"))
    assert_one_line_error(run_cli("ask", folder, "Is a bat a bird?"), str(folder), "no tokenizer vocabulary",
                          "spiece.model")
    bare = _copy_student(tiny_student, tmp_path / "bare",
                         drop=("spiece.model", "tokenizer.json", "tokenizer_config.json"))
    assert_one_line_error(run_cli("ask", bare, "Is a bat a bird?"), "no tokenizer vocabulary")


@pytest.mark.parametrize("key, value, words", [
    ("d_model", 0, ["d_model is 0", "at least 1"]),
    ("num_heads", 0, ["num_heads is 0"]),
    ("d_kv", -1, ["d_kv is -1"]),
    ("num_layers", 0, ["num_layers is 0"]),
    ("vocab_size", 0, ["vocab_size is 0"]),
    ("d_ff", "64", ["d_ff is '64'"]),
    ("d_model", True, ["d_model is true"]),
    ("dropout_rate", 2, ["dropout_rate is 2"]),
    ("layer_norm_epsilon", -1, ["layer_norm_epsilon is -1"]),
    ("pad_token_id", 100000, ["pad_token_id is 100000", "vocab_size"]),
    ("feed_forward_proj", 3, ["feed_forward_proj is 3"]),
    ("initializer_factor", "x", ["transformers refuses", "initializer_factor"]),
])
def test_a_student_config_with_a_nonsensical_size_is_one_line(tiny_student, tmp_path, key, value, words):
    folder = _copy_student(tiny_student, tmp_path / "bad", **{key: value})
    assert_one_line_error(run_cli("ask", folder, "Is a bat a bird?"), "config.json", *words)


# ---- item 7: `mlx-distill tui` without a terminal is refused, as the bare command is --------------


def test_tui_without_a_terminal_refuses_in_one_line_instead_of_drawing_into_a_file(tmp_path):
    import os
    import subprocess
    import sys

    from mlx_distill.testing.cli_runner import OPENBLAS, ROOT, CliResult

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    screen = tmp_path / "screen.txt"
    with open(screen, "w") as out:  # before the fix: escape codes here until the timeout
        done = subprocess.run([sys.executable, "-m", "mlx_distill", "tui", "--runs-dir", str(tmp_path)], cwd=ROOT,
                              env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, text=True,
                              timeout=90)
    assert_one_line_error(CliResult(done.returncode, "", done.stderr), "needs a terminal")
    assert screen.read_text() == ""


# ---- item 12 and "push with huggingface-hub 1.x" ------------------------------------------------


def test_push_checks_the_repo_id_before_exporting(run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_used")  # the hub is never reached: the id is refused first
    for extra in ((), ("--dry-run",)):
        assert_one_line_error(run_cli("push", run, "not a repo id!", *extra), "not a hub repo id")
        assert_one_line_error(run_cli("push", run, "noowner", *extra), "has no owner")
    assert not (run / "export").exists()  # nothing exported for a push that cannot happen


def test_a_dry_run_push_leaves_the_exports_card_as_it_was(run):
    assert run_cli("export", run).returncode == 0
    card = run / "export" / "student" / "README.md"
    before = card.read_text()
    result = run_cli("push", run, "me/demo-student", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run: would push" in result.stdout and "  README.md  " in result.stdout
    assert card.read_text() == before
    assert "me/demo-student" not in before


class _RefusingHub:
    """A stand-in for the hub on 127.0.0.1 (the hub cannot be reached from here) that answers
    every request 401, as the hub answers a bad token."""

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Refuse(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"error": "Invalid credentials in Authorization header"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _refuse

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _hub_online(monkeypatch) -> None:
    """CI sets HF_HUB_OFFLINE=1 (no hub here); these pushes go to loopback stand-ins, so allow them."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_push_needs_no_particular_http_client_of_the_hub_library(run, monkeypatch):
    """huggingface-hub 1.x uses httpx, 2.x httpx2: push must work when httpx2 cannot be imported."""
    import sys

    _hub_online(monkeypatch)

    from mlx_distill.share import plan_push, push_folder

    assert run_cli("export", run).returncode == 0
    plan = plan_push(run / "export" / "student", "me/demo-student")
    import huggingface_hub.hf_api  # noqa: F401  (loaded before httpx2 is hidden, as 1.x would load httpx)

    monkeypatch.setitem(sys.modules, "httpx2", None)  # `import httpx2` -> ImportError
    with _RefusingHub() as endpoint:
        with pytest.raises(DistillError, match=r"refused the token \(401\)"):
            push_folder(plan, token="hf_bad", endpoint=endpoint)


def test_push_to_an_unreachable_hub_is_one_line(run, monkeypatch):
    from mlx_distill.share import plan_push, push_folder

    _hub_online(monkeypatch)

    assert run_cli("export", run).returncode == 0
    plan = plan_push(run / "export" / "student", "me/demo-student")
    import socket

    with socket.socket() as probe:  # a loopback port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DistillError, match=f"cannot reach the hub at http://127.0.0.1:{port}"):
        push_folder(plan, token="hf_x", endpoint=f"http://127.0.0.1:{port}")


# ---- item 10 (metrics.json): export and push say which figure is broken, in one line -------------


@pytest.mark.parametrize("metrics, words", [
    ({"student_test_accuracy": 0.7, "exports": []}, ["exports is []", "not an object"]),
    ({"student_test_accuracy": "high"}, ["student_test_accuracy is \"high\"", "not a number"]),
    ({"student_test_accuracy": 0.7, "exports": {"student": []}}, ["exports.student is []"]),
    ({"exports": {"student-8bit-g64": {"bits": 8, "test_accuracy": "x"}}}, ["exports.student-8bit-g64.test_accuracy"]),
    ({"student_seconds_per_answer": "fast"}, ["student_seconds_per_answer"]),
    ({"baselines": {"finetune": {"test_accuracy": True}}}, ["baselines.finetune.test_accuracy is true"]),
    ({"train": 3}, ["train is 3", "not an object"]),
])
def test_export_and_push_refuse_a_broken_metrics_json_in_one_line(run, metrics, words):
    (run / "metrics.json").write_text(json.dumps(metrics))
    for command in (("export", run), ("export", run, "--quantize", "8"), ("push", run, "me/x", "--dry-run")):
        assert_one_line_error(run_cli(*command), "metrics.json", *words)
    assert json.loads((run / "metrics.json").read_text()) == metrics  # left as it was
    assert not (run / "export").exists()


# ---- "the quantized export is described as mlx-lm's layout": what loads it, said plainly ---------


def test_only_mlx_distill_loads_a_quantized_student_and_the_card_and_help_say_so(run, tiny_student, tmp_path):
    import warnings

    from transformers import T5ForConditionalGeneration

    from mlx_distill.share import model_card_text
    from mlx_distill.student import load_student, quantization_of, quantize_student, save_student

    model, tokenizer = load_student(tiny_student)
    quantize_student(model, 8)
    folder = save_student(model, tokenizer, tmp_path / "q8")
    assert quantization_of(load_student(folder)[0]) == {"group_size": 32, "bits": 8, "mode": "affine"}
    with warnings.catch_warnings(), pytest.raises(ValueError, match="quant_method"):
        warnings.simplefilter("ignore")
        T5ForConditionalGeneration.from_pretrained(folder)  # if this ever loads, say so in card, help, README

    metrics = json.loads((run / "metrics.json").read_text())
    metrics["exports"] = {"student-8bit-g32": {"bits": 8, "group_size": 32, "mode": "affine", "weight_bytes": 10,
                                               "float_weight_bytes": 30, "test_accuracy": 0.7}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = model_card_text(run, "me/x", export="student-8bit-g32")
    assert "Only mlx-distill loads this folder" in card and "transformers refuses" in card
    assert "mlx-lm's layout" not in card
    help_text = run_cli("export", "--help").stdout
    assert "loads only in mlx-distill" in " ".join(help_text.split())
