"""The UI's plain-Python parts: reading run folders (mlx_distill.pipeline), pipeline processes
(tui.processes), chat history, the event fold (tui.state), the New run form checks (tui.run_form)
and the chat engine thread (tui.engine). No Textual here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mlx_distill import events as ev
from mlx_distill import pipeline
from mlx_distill.config import FORMAT_VERSION
from mlx_distill.tui import chat_history, processes
from mlx_distill.tui.engine import ChatDone, ChatFailed, ChatRequest, ChatToken, Engine, ModelLoading
from mlx_distill.errors import DistillError
from mlx_distill.tui.model_choices import ModelChoice
from mlx_distill.testing.ui_fakes import T0, EchoBackend, make_run, sample_events
from mlx_distill.tui.run_form import RunForm, build_config, check_config, check_form
from mlx_distill.tui.state import DONE, FAILED, RUNNING, STOPPED, DashboardState

REPO = Path(__file__).resolve().parents[1]


# ---- run folders -----------------------------------------------------------------------------


def test_list_runs_reads_task_models_accuracy_date_newest_first(tmp_path):
    make_run(tmp_path, "old", task="cqa", accuracy=0.5, created=T0 - 86400, student="google/t5-v1_1-base")
    make_run(tmp_path, "new", accuracy=0.71, created=T0)
    (tmp_path / "not-a-run").mkdir()  # e.g. the demo's model folder
    listed = pipeline.list_runs(tmp_path)
    assert [run.name for run in listed] == ["new", "old"]
    old = listed[1]
    assert (old.task, old.student, old.method, old.accuracy, old.status) == (
        "cqa", "google/t5-v1_1-base", "step-by-step", 0.5, "finished")
    assert old.created == pytest.approx(T0 - 86400 + 1)  # the first event's time
    assert old.accuracy_text == "50.0%"


def test_run_status_follows_state_json(tmp_path):
    stopped = make_run(tmp_path, "stopped", accuracy=None,
                       state={"data": {"status": "done"}, "teacher": {"status": "stopped"}})
    failed = make_run(tmp_path, "failed", accuracy=None, state={"data": {"status": "failed"}})
    partial = make_run(tmp_path, "partial", accuracy=None,
                       state={"data": {"status": "done"}, "teacher": {"status": "running"}})
    assert pipeline.read_run(stopped).status == "stopped"
    assert pipeline.read_run(failed).status == "failed"
    assert pipeline.read_run(partial).status == "incomplete"


def test_newer_format_is_a_clear_problem_not_an_exception(tmp_path):
    newer = make_run(tmp_path, "newer", format_version=FORMAT_VERSION + 1)
    info = pipeline.read_run(newer)
    assert info.status == "unreadable"
    assert "newer mlx-distill" in info.problem and "upgrade" in info.problem
    with pytest.raises(DistillError, match="newer"):
        pipeline.read_run_config(newer)
    # state.json alone can be the newer one too
    other = make_run(tmp_path, "other")
    (other / pipeline.STATE_FILE).write_text(json.dumps({"format_version": 99, "stages": {}}))
    assert "format 99" in pipeline.read_run(other).problem


def test_damaged_config_is_reported_with_its_path(tmp_path):
    run = make_run(tmp_path, "broken")
    (run / pipeline.CONFIG_FILE).write_text("name = [unclosed")
    info = pipeline.read_run(run)
    assert str(run / pipeline.CONFIG_FILE) in info.problem


def test_event_tail_is_incremental_and_waits_for_a_torn_line(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = pipeline.EventTail(path)
    assert tail.read_new() == []  # no file yet
    first, second = ev.StageStarted(stage="data", time=1.0), ev.Log(message="hello", time=2.0)
    path.write_text(first.to_json() + "\n" + second.to_json()[:10])  # the writer is mid-line
    assert tail.read_new() == [first]
    assert tail.read_new() == []
    with path.open("a") as file:
        file.write(second.to_json()[10:] + "\n" + "not json\n" + json.dumps({"kind": "FromTheFuture"}) + "\n")
    assert tail.read_new() == [second]
    assert tail.skipped == 2


def test_write_config_round_trips_through_the_pipelines_config_parser(tmp_path):
    from mlx_distill.config import load_config

    data_file = tmp_path / "mine.jsonl"
    data_file.write_text('{"input": "2 + 2", "label": "4"}\n')
    form = RunForm(task="jsonl", data_path=str(data_file), teacher="mlx-community/Qwen2.5-1.5B-Instruct-4bit",
                   student="google/flan-t5-small", method="step-by-step", alpha="0.3", fraction="0.5", name="mine")
    path = processes.write_new_run_config(tmp_path, build_config(form, tmp_path / "runs"))
    parsed = load_config(path)
    assert (parsed.name, parsed.task.name, parsed.task.data, parsed.task.subsample) == (
        "mine", "jsonl", str(data_file), 0.5)
    assert parsed.teacher.model == "mlx-community/Qwen2.5-1.5B-Instruct-4bit"
    assert (parsed.train.student, parsed.train.method, parsed.train.trainer.alpha) == (
        "google/flan-t5-small", "step-by-step", 0.3)


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    first = processes.new_run_dir(tmp_path, "svamp run")
    second = processes.new_run_dir(tmp_path, "svamp run")
    assert (first.name, second.name) == ("svamp-run", "svamp-run-2")


def test_student_source_prefers_the_export_then_the_best_checkpoint(tmp_path):
    from mlx_distill.testing.ui_fakes import fake_student

    run = make_run(tmp_path, "r", with_student=False, student="google/flan-t5-small")
    assert pipeline.student_source(run) is None
    checkpoints = run / "train" / "checkpoints"
    for name in ("step-00000100", "step-00000200", "best-00000100"):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "model.safetensors").write_bytes(b"")
    source = pipeline.student_source(run)
    assert source == pipeline.StudentSource("google/flan-t5-small", str(checkpoints / "best-00000100"))
    (checkpoints / "best-00000300").mkdir()
    (checkpoints / "best-00000300" / "model.safetensors").write_bytes(b"")
    assert pipeline.student_source(run).weights == str(checkpoints / "best-00000300")
    exported = fake_student(run / "student")
    assert pipeline.student_source(run) == pipeline.StudentSource(str(exported))


def test_chat_history_round_trip_skips_torn_lines(tmp_path):
    chat_history.append_chat(tmp_path, {"question": "q1", "answer": "a1"})
    with (tmp_path / chat_history.CHAT_FILE).open("a") as file:
        file.write('{"question": "torn')
    chat_history.append_chat(tmp_path, {"question": "q2", "answer": "a2"})
    assert [record["question"] for record in chat_history.read_chat(tmp_path)] == ["q1", "q2"]


# ---- the pipeline process --------------------------------------------------------------------

# A stand-in pipeline: holds the run folder's lock like the real one, and on SIGINT appends Finished(stopped).
FAKE_PIPELINE = textwrap.dedent("""
    import json, os, signal, sys, time
    from mlx_distill.files import exclusive_lock
    run = sys.argv[1]
    class Stop(Exception):
        pass
    def stop(signum, frame):
        raise Stop
    signal.signal(signal.SIGINT, stop)
    with exclusive_lock(os.path.join(run, "pid"), "run " + run):
        try:
            print("started", flush=True)
            time.sleep(60)
        except Stop:
            with open(os.path.join(run, "events.jsonl"), "a") as f:
                f.write(json.dumps({"kind": "Finished", "stage": "run", "stopped": True}) + "\\n")
            sys.exit(130)
""")


def test_stop_pipeline_sends_sigint_and_the_run_keeps_its_work(tmp_path):
    script = tmp_path / "fake_pipeline.py"
    script.write_text(FAKE_PIPELINE)
    run = tmp_path / "run"
    run.mkdir()
    child = subprocess.Popen([sys.executable, str(script), str(run)], start_new_session=True)
    try:
        deadline = time.time() + 10
        while pipeline.running_pid(run) is None and time.time() < deadline:
            time.sleep(0.05)
        assert pipeline.running_pid(run) == child.pid
        assert pipeline.read_run(run).status == "running"
        assert processes.stop_pipeline(run)
        assert child.wait(10) == 130
    finally:
        if child.poll() is None:
            child.kill()
    assert pipeline.running_pid(run) is None
    assert pipeline.read_run(run).status == "incomplete"  # the lock is free: nothing runs
    (finished,) = pipeline.read_events(run / pipeline.EVENTS_FILE)
    assert isinstance(finished, ev.Finished) and finished.stopped
    assert not processes.stop_pipeline(run)  # nothing left to stop


def test_start_pipeline_is_detached_and_logs_to_the_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / pipeline.CONFIG_FILE).write_text('name = "x"\nbogus_key = 1\n')
    child = processes.start_pipeline(run)
    assert child.wait(60) == 2
    log = (run / processes.LOG_FILE).read_text()
    assert "error:" in log and "bogus_key" in log
    assert "bogus_key" in processes.log_tail(run, 1)


def test_starter_starts_the_pipeline_in_its_own_session(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    command = processes.pipeline_command(run)
    assert command[1:4] == ["-m", "mlx_distill", "run"] and command[-3:] == ["--run-dir", str(run), "--quiet"]
    demo = processes.pipeline_command(run, demo=True)
    assert demo[3:] == ["demo", "--runs-dir", str(tmp_path.resolve()), "--name", "run", "--quiet"]
    starter = processes.SubprocessStarter()
    original = processes.pipeline_command
    try:
        processes.pipeline_command = lambda *a, **k: [sys.executable, "-c", "import os,time; print(os.getsid(0)); time.sleep(30)"]
        starter.start(run)
        assert starter.is_running(run)
        child = starter._children[run]
        assert os.getsid(child.pid) == child.pid != os.getsid(0)
    finally:
        processes.pipeline_command = original
        child.kill()
        child.wait()
    assert starter.exit_code(run) == -signal.SIGKILL


# ---- the dashboard's fold of events ----------------------------------------------------------


def test_run_state_follows_a_whole_run():
    state = DashboardState()
    for event in sample_events(steps=60, questions=40):
        state.apply(event)
    assert all(value == DONE for value in state.stages.values())
    assert state.teacher.done == 40 and state.teacher.accepted == 30
    assert state.steps[-1] == 60 and len(state.label_losses) == 60 and len(state.rationale_losses) == 60
    assert state.eval_steps == [10, 20, 30, 40, 50, 60]
    assert state.test.accuracy == 0.71
    assert state.status == "finished" and not state.running
    assert "accepted 30 (75%)" in state.teacher_text()
    assert "test 71.0% (142/200)" in state.accuracy_text()
    assert "ETA" not in state.train_text()  # the stage is over


def test_run_state_shows_eta_only_while_running_and_marks_stops_and_failures():
    state = DashboardState()
    for event in sample_events(stopped_at=25):
        state.apply(event)
    assert state.stages["train"] == STOPPED
    assert "stopped" in state.status
    state = DashboardState()
    for event in sample_events()[:30]:
        state.apply(event)
    assert state.stages["teacher"] == RUNNING and "ETA" in state.teacher_text()
    assert "ETA" not in state.teacher_text(show_eta=False)
    state.apply(ev.Failed(stage="teacher", error="teacher does not fit"))
    assert state.stages["teacher"] == FAILED and state.status == "failed in teacher"
    assert state.log[-1] == "error in teacher: teacher does not fit"


def test_dashboard_state_of_a_run_whose_process_is_gone_never_looks_running():
    state = DashboardState()
    for event in sample_events()[:30]:  # mid-teacher, then the process was killed
        state.apply(event)
    state.pipeline_alive = False
    assert not state.running
    assert state.shown_stages["teacher"] == STOPPED and state.stages["teacher"] == RUNNING
    assert state.status == "incomplete — no pipeline is running; resume with r"
    assert "ETA" not in state.teacher_text()


# ---- the New run form ------------------------------------------------------------------------


def _form(tmp_path, **changes) -> RunForm:
    data_file = tmp_path / "data.jsonl"
    if not data_file.exists():
        data_file.write_text("".join(json.dumps({"input": f"{i} + 1", "label": str(i + 1)}) + "\n" for i in range(30)))
    values = dict(task="jsonl", data_path=str(data_file), teacher="mlx-community/Qwen2.5-1.5B-Instruct-4bit",
                  student="google/flan-t5-small")
    values.update(changes)
    return RunForm(**values)


def test_form_problems_name_the_bad_value(tmp_path):
    big = ModelChoice("mlx-community/Llama-3.3-70B-Instruct-4bit", "teacher", 42_000_000_000, fits=False)
    assert check_form(_form(tmp_path)) == []
    problems = check_form(_form(tmp_path, teacher=big.name, alpha="1.5", fraction="0", data_path="/no/such"), [big])
    assert any("/no/such does not exist" in p for p in problems)
    assert any("needs 42.0 GB" in p and "smaller teacher" in p for p in problems)
    assert any("alpha 1.5" in p for p in problems)
    assert any("data fraction 0.0" in p for p in problems)
    # finetune never uses the teacher, so a too-big teacher does not matter
    assert check_form(_form(tmp_path, teacher=big.name, method="finetune"), [big]) == []


def test_form_takes_a_gguf_teacher_file_and_ollama_names(tmp_path):
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert check_form(_form(tmp_path, teacher=str(gguf))) == []
    assert check_form(_form(tmp_path, teacher="ollama:qwen2.5:7b")) == []
    problems = check_form(_form(tmp_path, teacher=str(tmp_path / "missing.gguf")))
    assert problems == [f"teacher folder or .gguf file {tmp_path / 'missing.gguf'} does not exist; "
                        "give an existing folder or .gguf file or a hub id"]


def test_check_config_parses_the_data_and_reports_a_bad_line(tmp_path):
    form = _form(tmp_path)
    summary = check_config(build_config(form, tmp_path / "runs"))
    assert "train" in summary and "validation" in summary
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "1", "label": "2"}\n{"input": "oops"\n')
    with pytest.raises(DistillError, match="bad.jsonl:2"):
        check_config(build_config(_form(tmp_path, data_path=str(bad)), tmp_path / "runs"))


# ---- the chat engine -------------------------------------------------------------------------


def _collect() -> tuple[list[ev.Event], threading.Event, callable]:
    seen: list[ev.Event] = []
    done = threading.Event()

    def on_event(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, (ChatDone, ChatFailed)) and event.part == "teacher":
            done.set()

    return seen, done, on_event


def test_engine_streams_student_rationale_and_teacher_on_one_thread():
    backend = EchoBackend()
    seen, done, on_event = _collect()
    engine = Engine(on_event, backend)
    request_id = engine.submit(ChatRequest("How many pens?", student="/s", explain=True, teacher="/t"))
    assert done.wait(10)
    engine.close()
    assert not engine.alive and backend.closed
    assert backend.threads == {"mlx-engine"}
    parts = [(type(e).__name__, e.part) for e in seen if not isinstance(e, ChatToken)]
    assert parts == [("ModelLoading", "answer"), ("ChatDone", "answer"), ("ChatDone", "rationale"),
                     ("ModelLoading", "teacher"), ("ChatDone", "teacher")]
    answer = "".join(e.text for e in seen if isinstance(e, ChatToken) and e.part == "answer")
    assert answer == EchoBackend.ANSWER
    assert all(e.request_id == request_id for e in seen)
    assert backend.loaded == ["/s", "/t"]  # the student is loaded once for both of its parts


def test_engine_reports_a_model_that_fails_to_load_and_keeps_serving():
    class Broken(EchoBackend):
        def load_student(self, path, weights=None):
            if path == "/bad":
                raise DistillError("/bad: not a T5 checkpoint")
            return super().load_student(path, weights)

    seen: list[ev.Event] = []
    engine = Engine(seen.append, Broken())
    engine.submit(ChatRequest("q", student="/bad"))
    second = engine.submit(ChatRequest("q", student="/good"))
    engine.close()
    failed = [e for e in seen if isinstance(e, ChatFailed)]
    assert failed and "not a T5 checkpoint" in failed[0].error
    assert any(isinstance(e, ChatDone) and e.request_id == second for e in seen)


def test_engine_with_a_real_tiny_student(tmp_path):
    """The default MLX backend on a tiny random T5 in the real on-disk format."""
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    folder = build_tiny_t5(tmp_path / "student", corpus=["how many pens are left", "8 - 3 = 5"] * 20)
    seen: list[ev.Event] = []
    engine = Engine(seen.append)
    engine.submit(ChatRequest("how many pens", student=str(folder), explain=True, max_tokens=8))
    engine.close(timeout=120)
    assert not engine.alive
    kinds = [type(e) for e in seen]
    assert ChatFailed not in kinds, [e for e in seen if isinstance(e, ChatFailed)]
    done = [e for e in seen if isinstance(e, ChatDone)]
    assert [e.part for e in done] == ["answer", "rationale"]
    assert all(0 < e.tokens <= 8 for e in done)
    streamed = "".join(e.text for e in seen if isinstance(e, ChatToken) and e.part == "answer")
    assert streamed == done[0].text
    assert isinstance(seen[0], ModelLoading)


def test_engine_loads_a_training_checkpoint_into_the_base_student(tmp_path):
    """Mid-training chat: the base student's config and tokenizer with a checkpoint's weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlx_distill.tui.engine import MlxBackend
    from mlx_distill.student import load_student
    from mlx_distill.testing.tiny_t5 import build_tiny_t5

    folder = build_tiny_t5(tmp_path / "student", corpus=["how many pens are left", "8 - 3 = 5"] * 20)
    model, _ = load_student(folder)
    changed = {name: value + 1.0 for name, value in tree_flatten(model.parameters())}
    checkpoint = tmp_path / "best-00000010"
    checkpoint.mkdir()
    mx.save_safetensors(str(checkpoint / "model.safetensors"), changed)
    result: dict = {}

    def load() -> None:  # on its own thread, as the engine does
        backend = MlxBackend()
        loaded, _ = backend.load_student(str(folder), str(checkpoint))
        result.update(tree_flatten(loaded.parameters()))
        backend.close()

    thread = threading.Thread(target=load)
    thread.start()
    thread.join(120)
    name = next(iter(changed))
    assert mx.allclose(result[name], changed[name]).item()
