"""Sharing a student (issue #14): quantized export, model card, push to the hub.

The quantization checks need a student that has learned something: the module fixture runs
`mlx-distill demo` once (about 1.5 minutes). The hub cannot be reached from these machines: the
push tests talk to ``HubStandIn``, a local stand-in of the hub's HTTP API on 127.0.0.1 that
implements only what ``create_repo`` and ``upload_folder`` call (repo create, preupload, commit,
repo info). It answers "regular" (inline) upload mode for every file, so the commit carries the
file contents; the real hub would move the weights through its LFS/Xet storage instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlx_distill.errors import DistillError
from mlx_distill.methods import RATIONALE_MAX_TOKENS, explain_prompt
from mlx_distill.student import generate, load_student
from mlx_distill.testing.cli_runner import OPENBLAS, ROOT, assert_one_line_error, run_cli, run_cli_process

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo"), pytest.mark.timeout(2400)]

TOKEN = "hf_stand_in_token"


# ---- a trained demo run, once for the module ---------------------------------------------------

def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **extra)
    if Path(OPENBLAS).exists():
        env.setdefault("LD_PRELOAD", OPENBLAS)
    return env


@pytest.fixture(scope="module")
def demo_run(demo_run_process) -> Path:
    """The session's one demo run (tests/conftest.py)."""
    run, done = demo_run_process
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def exports(demo_run):
    """The float, 8-bit and 4-bit exports of the demo run (4-bit: figures printed, not required)."""
    from mlx_distill.share import export_student

    results = {"float": export_student(demo_run), 8: export_student(demo_run, bits=8),
               4: export_student(demo_run, bits=4)}
    for key in (8, 4):
        r = results[key]
        print(f"\n{key}-bit g{r.quantization['group_size']}: weights {r.figures.weight_bytes} B "
              f"({r.size_ratio:.1%} of float {r.float_figures.weight_bytes} B), accuracy "
              f"{r.figures.test_accuracy:.1%} (float {r.float_figures.test_accuracy:.1%}), same answers "
              f"{r.agreement:.1%}, seconds per answer {r.figures.seconds_per_answer:.4f} "
              f"(float {r.float_figures.seconds_per_answer:.4f})")
    return results


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ---- quantization ----------------------------------------------------------------------------

def test_8bit_student_answers_like_the_float_one_in_a_third_of_the_space(demo_run, exports):
    from mlx_distill.student import load_student, quantization_of

    result = exports[8]
    float_config = json.loads((demo_run / "student" / "config.json").read_text())
    assert float_config["torch_dtype"] == "float32"
    assert result.agreement >= 0.95
    assert result.figures.weight_bytes <= 0.35 * result.float_figures.weight_bytes
    assert result.float_figures.test_accuracy == pytest.approx(_metrics(demo_run)["student_test_accuracy"])

    config = json.loads((result.folder / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}  # d_model 96: not 64
    model, _ = load_student(result.folder)
    assert quantization_of(model) == config["quantization"]
    entry = _metrics(demo_run)["exports"][result.name]
    assert entry["agreement"] == result.agreement and entry["weight_bytes"] == result.figures.weight_bytes
    assert entry["test_accuracy"] == result.figures.test_accuracy


def test_a_quantized_student_keeps_norms_and_position_bias_in_float_and_round_trips(tiny_student_without_dropout,
                                                                                    tmp_path):
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_distill.student import generate, load_student, quantize_student, save_student

    model, tokenizer = load_student(tiny_student_without_dropout)
    prompts = ["predict: a cat", "predict: the number 12"]
    quantization = quantize_student(model, 8, 32)
    assert isinstance(model.shared, nn.QuantizedEmbedding)
    assert isinstance(model.encoder.layers[0].attention.q, nn.QuantizedLinear)
    assert type(model.encoder.relative_attention_bias.embeddings) is nn.Embedding
    assert model.encoder.final_norm.weight.dtype == mx.float32 and model.dtype == mx.float32
    answers = generate(model, tokenizer, prompts, max_tokens=12)
    save_student(model, tokenizer, tmp_path / "q8")
    loaded, _ = load_student(tmp_path / "q8")
    assert generate(loaded, tokenizer, prompts, max_tokens=12) == answers
    assert json.loads((tmp_path / "q8" / "config.json").read_text())["quantization"] == quantization
    with pytest.raises(DistillError, match="already quantized"):
        quantize_student(loaded, 4)
    with pytest.raises(DistillError, match="3 bits"):
        quantize_student(load_student(tiny_student_without_dropout)[0], 3)


# ---- the model card --------------------------------------------------------------------------

def test_cards_parse_and_their_numbers_are_the_runs(demo_run, exports):
    from huggingface_hub import ModelCard

    metrics = _metrics(demo_run)
    card = ModelCard.load(exports["float"].folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "other"
    assert "distilling-step-by-step" in card.data.tags
    assert card.data.eval_results[0].metric_type == "accuracy"
    assert card.data.eval_results[0].metric_value == metrics["student_test_accuracy"]
    assert f"| this student | {metrics['student_test_accuracy'] * 100:.1f}% |" in card.text
    assert f"{metrics['data']['train']} train / {metrics['data']['validation']} validation" in card.text
    assert "transformers" in card.text
    if metrics["student_method"] == "step-by-step":  # the validation winner may be the finetune baseline
        assert f"α = {0.5}" in card.text

    name = exports[8].name
    quantized = ModelCard.load(exports[8].folder / "README.md")
    entry = metrics["exports"][name]
    assert quantized.data.library_name == "mlx"
    assert quantized.data.eval_results[0].metric_value == entry["test_accuracy"]
    assert f"{entry['agreement'] * 100:.1f}% of the {entry['test_total']} test questions" in quantized.text
    assert "Only mlx-distill loads this folder" in quantized.text and "transformers refuses" in quantized.text
    assert "T5ForConditionalGeneration" not in quantized.text


def test_a_card_names_the_hub_base_model_and_the_tasks_data_sets(demo_run, tmp_path):
    import shutil

    import tomli_w

    from huggingface_hub import ModelCard

    from mlx_distill.pipeline import read_run_config
    from mlx_distill.share import model_card_text

    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("export", "train", "baselines"))
    config = read_run_config(run)
    config["train"]["student"] = "flan-t5-small"
    config["task"] = {**config["task"], "name": "cqa"}
    (run / "config.toml").write_text(tomli_w.dumps(config))
    card = ModelCard(model_card_text(run, "me/cqa-student", "student"))
    assert card.data.base_model == "google/flan-t5-small"
    assert card.data.datasets == ["tau/commonsense_qa", "Salesforce/cos_e"]
    assert "load_student('me/cqa-student')" in card.text


def _python_blocks(card: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.read_text(), flags=re.S)


def _run_snippet(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_card_snippets_run_and_answer_as_the_run_did(demo_run, exports):
    first = json.loads((demo_run / "predictions_test.jsonl").read_text().splitlines()[0])
    explains = _metrics(demo_run)["student_method"] == "step-by-step"  # a finetune winner has no explain: task
    mlx_block, transformers_block = _python_blocks(exports["float"].folder / "README.md")
    lines = _run_snippet(mlx_block)
    assert lines[0] == first["generated"]
    if explains:  # the second line is the student's own rationale (with 6 rationale rows, it may be short)
        model, tokenizer = load_student(exports["float"].folder)
        rationale = generate(model, tokenizer, [explain_prompt(first["input"])], max_tokens=RATIONALE_MAX_TOKENS)[0]
        assert len(lines) == 2 and lines[1].strip() == rationale.strip() != ""
    else:
        assert len(lines) == 1
    assert "T5ForConditionalGeneration" in transformers_block
    assert _run_snippet(transformers_block) == [first["generated"]]

    (quantized_block,) = _python_blocks(exports[8].folder / "README.md")
    assert _run_snippet(quantized_block)[0] == first["generated"]  # the 8-bit student agrees on this question too (100% on the demo)


# ---- push --------------------------------------------------------------------------------------

class HubStandIn:
    """A local stand-in of the hub's HTTP API (not the hub): the endpoints create_repo and
    upload_folder use (repo create, README.md front-matter validation, preupload, commit, repo info), with the hub's answers for an existing repo, another owner's namespace and
    a missing token. Records every file content a commit carried."""

    OWNER = "me"

    def __init__(self):
        self.repos: dict[str, dict] = {"someone-else/model": {"files": {}, "commits": ["0" * 40]}}
        self.uploads: list[tuple[str, str, bytes]] = []  # (repo, path, content) for each file a commit sent
        self.unexpected: list[str] = []
        self.validated: list[str] = []  # README.md texts the client asked to validate
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                stand_in.handle(self, "GET")

            def do_POST(self):
                stand_in.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _reply(handler, status: int, body: dict):
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def handle(self, handler, method: str):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(handler, 401, {"error": "Invalid credentials in Authorization header"})
        path = handler.path.split("?")[0]
        if method == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request.get('organization') or self.OWNER}/{request['name']}"
            if repo.split("/")[0] != self.OWNER:
                return self._reply(handler, 403, {"error": "You don't have the rights to create a model under "
                                                           "this namespace"})
            if repo in self.repos:
                return self._reply(handler, 409, {"error": "You already created this model repo",
                                                  "url": f"{self.url}/{repo}"})
            self.repos[repo] = {"files": {}, "commits": [], "private": request.get("visibility") == "private"}
            return self._reply(handler, 200, {"url": f"{self.url}/{repo}"})
        if method == "POST" and path == "/api/validate-yaml":  # the client checks README.md's front matter first
            self.validated.append(json.loads(body)["content"])
            return self._reply(handler, 200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(preupload|commit|revision)/main)?", path)
        repo = match.group(1) if match else None
        if repo not in self.repos:
            self.unexpected.append(f"{method} {path}")
            return self._reply(handler, 404, {"error": "Repository not found"})
        if repo.split("/")[0] != self.OWNER and match.group(2) in ("preupload", "commit"):
            return self._reply(handler, 403, {"error": "You don't have write access to this repo"})
        stored = self.repos[repo]
        if method == "POST" and match.group(2) == "preupload":
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                      "oid": _git_sha1(stored["files"][f["path"]]) if f["path"] in stored["files"] else None}
                     for f in json.loads(body)["files"]]
            return self._reply(handler, 200, {"files": files, "commitOid": stored["commits"][-1:] or None})
        if method == "POST" and match.group(2) == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    content = base64.b64decode(item["value"]["content"])
                    stored["files"][item["value"]["path"]] = content
                    self.uploads.append((repo, item["value"]["path"], content))
                elif item["key"] != "header":
                    self.unexpected.append(f"commit item {item['key']}")
            sha = hashlib.sha1(repr(sorted(stored["files"].items())).encode()).hexdigest()
            stored["commits"].append(sha)
            return self._reply(handler, 200, {"commitUrl": f"{self.url}/{repo}/commit/{sha}", "commitOid": sha,
                                              "success": True})
        if method == "GET":
            return self._reply(handler, 200, {"id": repo, "sha": (stored["commits"] or ["0" * 40])[-1],
                                              "private": stored.get("private", False),
                                              "siblings": [{"rfilename": p} for p in sorted(stored["files"])]})
        self.unexpected.append(f"{method} {path}")
        return self._reply(handler, 404, {"error": "not in the stand-in"})


def _git_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    stand_in = HubStandIn()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stand_in.url)  # what HF_ENDPOINT sets
    yield stand_in
    stand_in.close()


def test_push_uploads_every_file_and_an_unchanged_folder_uploads_nothing(exports, hub):
    from mlx_distill.share import plan_push, push_folder

    folder = exports[8].folder
    plan = plan_push(folder, "me/demo-student-8bit", private=True)
    url = push_folder(plan, token=TOKEN, endpoint=hub.url)
    stored = hub.repos["me/demo-student-8bit"]
    assert url.startswith(f"{hub.url}/me/demo-student-8bit/commit/")
    assert sorted(stored["files"]) == sorted(name for name, _ in plan.files)
    for name, _ in plan.files:
        assert stored["files"][name] == (folder / name).read_bytes(), name
    assert stored["private"] is True and len(stored["commits"]) == 1
    assert hub.validated == [(folder / "README.md").read_text()]

    uploads = len(hub.uploads)
    push_folder(plan, token=TOKEN, endpoint=hub.url)
    assert len(hub.uploads) == uploads and len(stored["commits"]) == 1
    assert hub.unexpected == []


def test_push_failures_are_one_line(exports, hub, tmp_path, monkeypatch):
    from mlx_distill.share import plan_push, push_folder

    plan = plan_push(exports["float"].folder, "someone-else/model")
    with pytest.raises(DistillError, match="belongs to someone else") as refused:
        push_folder(plan, token=TOKEN, endpoint=hub.url)
    with pytest.raises(DistillError, match="refused the token") as bad_token:
        push_folder(plan_push(exports["float"].folder, "me/x"), token="hf_wrong", endpoint=hub.url)
    with pytest.raises(DistillError, match="cannot reach the hub") as no_network:
        push_folder(plan, token=TOKEN, endpoint="http://127.0.0.1:9")  # the discard port: nothing listens
    for error in (refused, bad_token, no_network):
        assert len(str(error.value).splitlines()) == 1

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login either
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    run = exports["float"].folder.parents[1]
    assert_one_line_error(run_cli_process("push", run, "me/demo-student"), "no Hugging Face token", "hf auth login")


def test_push_dry_run_lists_every_file_and_sends_nothing(demo_run, exports):
    result = run_cli_process("push", demo_run, "me/demo-student", "--quantize", "8", "--dry-run")
    assert result.returncode == 0, result.stderr
    folder = exports[8].folder
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # hidden files stay home
    assert f"dry run: would push {len(names)} files" in result.stdout
    for name in names:
        assert f"  {name}  " in result.stdout
    assert "pushing the existing export" in result.stdout  # not measured again
    assert "me/demo-student'" not in (folder / "README.md").read_text()  # a dry run rewrites nothing


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_cli("export", tmp_path), "not a run folder")
    assert_one_line_error(run_cli("push", tmp_path, "me/x", "--dry-run"), "not a run folder")


# ---- the TUI's runs screen ---------------------------------------------------------------------

def test_share_arguments_follow_the_dialog():
    from mlx_distill.tui.screens.runs import share_arguments

    run = Path("runs/demo")
    assert share_arguments("export", run) == ["export", "runs/demo", "--quiet"]
    assert share_arguments("export", run, quantize="8", group_size="32") == [
        "export", "runs/demo", "--quantize", "8", "--group-size", "32", "--quiet"]
    assert share_arguments("push", run, repo_id="me/x", quantize="4", private=True, dry_run=True) == [
        "push", "runs/demo", "me/x", "--quantize", "4", "--private", "--dry-run", "--quiet"]


async def test_runs_screen_push_dialog_runs_a_dry_run(demo_run, exports):
    from textual.widgets import Input

    from mlx_distill.testing.ui_fakes import EchoBackend, ScriptedStarter
    from mlx_distill.tui.app import DistillApp
    from mlx_distill.tui.screens.runs import ShareScreen

    app = DistillApp(demo_run.parent, starter=ScriptedStarter(), chat_backend=EchoBackend(), choices=[],
                     available_memory=lambda: 16_000_000_000, poll_interval=60)
    app.animation_level = "none"
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("p")
        assert isinstance(app.screen, ShareScreen)
        app.screen.query_one("#repo-id", Input).value = "me/demo-student"
        await pilot.click("#go")
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        messages = [n.message for n in app._notifications]
        assert any("dry run: would push" in m and "README.md" in m for m in messages), messages
