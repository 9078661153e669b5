"""Pilot tests of every screen of the Textual app, with a scripted pipeline and echo chat models.

The ScriptedStarter writes events into the run folder's events.jsonl, the same file the real
pipeline appends to, so these tests run the app's real follow path; the EchoBackend runs on the
app's real engine thread.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import DataTable, Input, Log, ProgressBar, Select, Static, Switch

from mlx_distill.config import FORMAT_VERSION
from mlx_distill.pipeline import CONFIG_FILE
from mlx_distill.tui.chat_history import read_chat
from mlx_distill.tui.app import DistillApp
from mlx_distill.tui.model_choices import ModelChoice
from mlx_distill.testing.ui_fakes import T0, EchoBackend, ScriptedStarter, fake_student, make_run, sample_events
from mlx_distill.tui.screens.chat import ChatScreen, Exchange
from mlx_distill.tui.screens.dashboard import DashboardScreen
from mlx_distill.tui.screens.modals import ConfirmScreen, MessageScreen
from mlx_distill.tui.screens.new_run import NewRunScreen
from mlx_distill.tui.screens.runs import RunsScreen

SIZE = (100, 36)
CHOICES = [
    ModelChoice("mlx-community/Qwen2.5-1.5B-Instruct-4bit", "teacher", 2_000_000_000, "1.5B", downloaded=True),
    ModelChoice("mlx-community/Llama-3.3-70B-Instruct-4bit", "teacher", 42_000_000_000, "70B", fits=False),
    ModelChoice("google/flan-t5-small", "student", 3_000_000_000, "77M", downloaded=True),
]


def make_app(runs_dir: Path, **kwargs) -> DistillApp:
    kwargs.setdefault("starter", ScriptedStarter())
    kwargs.setdefault("chat_backend", EchoBackend())
    kwargs.setdefault("choices", CHOICES)
    kwargs.setdefault("available_memory", lambda: 16_000_000_000)
    kwargs.setdefault("poll_interval", 60)  # tests call poll_run() themselves
    app = DistillApp(runs_dir, **kwargs)
    app.animation_level = "none"
    return app


def text_of(app: DistillApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def wait_until(pilot, condition, tries: int = 100) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


# ---- runs browser ----------------------------------------------------------------------------


async def test_runs_browser_lists_runs_and_opens_a_replay(tmp_path):
    make_run(tmp_path, "svamp-small", created=T0)
    make_run(tmp_path, "cqa-base", task="cqa", accuracy=0.55, created=T0 - 86400, student="google/t5-v1_1-base")
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, RunsScreen)
        table = app.screen.query_one(DataTable)
        rows = [tuple(table.get_row_at(i)) for i in range(table.row_count)]
        assert [row[:4] for row in rows] == [("svamp-small", "svamp", "71.0%", "finished"),
                                            ("cqa-base", "cqa", "55.0%", "finished")]
        assert rows[1][5:7] == ("Qwen2.5-1.5B-Instruct…", "t5-v1_1-base")
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
        assert app.run_dir == tmp_path / "cqa-base"
        assert app.screen.query_one("#train-bar", ProgressBar).percentage == 1.0
        assert "test 71.0% (142/200)" in text_of(app, "#accuracy")
        assert "finished" in text_of(app, "#run-status")
        assert app.screen.query_one("#log", Log).lines[-1] == "✓ run finished"


async def test_runs_browser_explains_a_run_from_a_newer_version(tmp_path):
    make_run(tmp_path, "future", format_version=FORMAT_VERSION + 1)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(DataTable)
        assert table.get_row_at(0)[3] == "newer version"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MessageScreen)
        assert "written by a newer mlx-distill" in app.screen.message
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
        assert app.run_dir is None


# ---- new run -----------------------------------------------------------------------------------


async def fill_form(pilot, data_path: str, teacher: str = "", student: str = "google/flan-t5-small") -> None:
    screen = pilot.app.screen
    screen.query_one("#task", Select).value = "jsonl"
    screen.query_one("#data-path", Input).value = data_path
    screen.query_one("#teacher-input", Input).value = teacher
    screen.query_one("#student-input", Input).value = student
    screen.query_one("#run-name", Input).value = "my-run"
    await pilot.pause()


def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"input": f"{i} + 2", "label": str(i + 2)}) + "\n" for i in range(40)))
    return path


async def test_new_run_writes_a_config_starts_the_pipeline_and_shows_progress(tmp_path):
    starter = ScriptedStarter(block_after=30)
    app = make_app(tmp_path / "runs", starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await fill_form(pilot, str(data_file(tmp_path)), teacher="mlx-community/Qwen2.5-1.5B-Instruct-4bit")
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen))
        run_dir = tmp_path / "runs" / "my-run"
        assert starter.started == [(run_dir, False)]
        from mlx_distill.config import load_config

        config = load_config(run_dir / CONFIG_FILE)
        assert (config.task.name, config.train.student, config.teacher.model) == (
            "jsonl", "google/flan-t5-small", "mlx-community/Qwen2.5-1.5B-Instruct-4bit")
        # 30 events: the teacher is mid-way
        bar = app.screen.query_one("#teacher-bar", ProgressBar)
        assert (bar.progress, bar.total) == (25, 40)
        assert "25/40 questions" in text_of(app, "#teacher-stats")
        assert "ETA" in text_of(app, "#teacher-stats")
        assert "✓ accepted" in text_of(app, "#latest") and "Jack had 8 pens" in text_of(app, "#latest")
        assert "running: teacher" in text_of(app, "#run-status")
        # the pipeline writes on; the app follows the file
        starter.release(run_dir, 60)
        app.poll_run()
        await pilot.pause()
        train = app.screen.query_one("#train-bar", ProgressBar)
        assert train.progress > 0 and train.total == 60
        assert "label" in text_of(app, "#train-stats")
        assert app.screen.state.label_losses and app.screen.state.rationale_losses
        starter.release(run_dir)
        app.poll_run()
        await pilot.pause()
        assert "test 71.0%" in text_of(app, "#accuracy")


async def test_new_run_shows_a_task_file_that_does_not_parse(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "1", "label": "2"}\nnot json at all\n')
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await fill_form(pilot, str(bad), teacher="mlx-community/Qwen2.5-1.5B-Instruct-4bit")
        await pilot.click("#start")
        await app.workers.wait_for_complete()
        await pilot.pause()
        error = text_of(app, "#form-error")
        assert "bad.jsonl:2" in error
        assert starter.started == [] and isinstance(app.screen, NewRunScreen)
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


async def test_new_run_refuses_a_teacher_that_does_not_fit(tmp_path):
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await fill_form(pilot, str(data_file(tmp_path)))
        app.screen.query_one("#teacher-select", Select).value = "mlx-community/Llama-3.3-70B-Instruct-4bit"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "needs 42.0 GB" in text_of(app, "#form-error")
        assert starter.started == []


# ---- dashboard: cancel, resume, a crashed pipeline ------------------------------------------


async def test_cancel_asks_then_stops_and_resume_restarts(tmp_path):
    starter = ScriptedStarter(block_after=70)
    app = make_app(tmp_path, starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start_demo()
        await pilot.pause()
        run_dir = tmp_path / "demo"
        assert starter.started == [(run_dir, True)]
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("r")  # already running: refused
        assert len(starter.started) == 1
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep running
        assert starter.stopped == []
        await pilot.press("x")
        await pilot.press("y")
        assert starter.stopped == [run_dir]
        app.poll_run()
        await pilot.pause()
        state = app.screen.state
        assert state.finished is not None and state.finished.stopped
        assert state.stages["train"] == "stopped"
        assert "stopped" in text_of(app, "#run-status")
        await pilot.press("r")
        assert len(starter.started) == 2
        app.poll_run()
        await pilot.pause()
        assert app.screen.state.finished is None  # the resumed run is live again
        assert "running" in text_of(app, "#run-status")


async def test_a_pipeline_that_dies_shows_its_error(tmp_path):
    starter = ScriptedStarter(script=sample_events()[:3], block_after=3, exit_code=2,
                                log="Traceback…\nerror: teacher needs 40.0 GB, 12.0 GB available\n")
    app = make_app(tmp_path, starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start_demo()
        app.poll_run()
        await pilot.pause()
        assert "failed" in text_of(app, "#run-status")
        assert "teacher needs 40.0 GB" in app.screen.query_one("#log", Log).lines[-1]


async def test_updates_arrive_while_the_chat_is_on_screen(tmp_path):
    starter = ScriptedStarter(block_after=10)
    app = make_app(tmp_path, starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        app.action_start_demo()
        await pilot.pause()
        await pilot.press("f4")
        assert isinstance(app.screen, ChatScreen)
        starter.release(tmp_path / "demo")
        app.poll_run()
        await pilot.pause()
        dashboard = app.get_screen("dashboard", DashboardScreen)
        assert dashboard.state.finished is not None
        assert dashboard.query_one("#train-bar", ProgressBar).percentage == 1.0


# ---- chat ------------------------------------------------------------------------------------


async def test_chat_streams_an_answer_and_toggles_the_rationale(tmp_path):
    run = make_run(tmp_path, "svamp-small")
    app = make_app(tmp_path, run_dir=run, mode="chat")
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, ChatScreen)
        assert "svamp-small/student" in text_of(app, "#chat-model")
        await pilot.press(*"How many pens?", "enter")
        exchange = app.screen.query_one(Exchange)
        student = exchange.reply("answer")
        await wait_until(pilot, lambda: student.texts["answer"] == EchoBackend.ANSWER)
        assert str(student.query_one(".answer", Static).render()) == EchoBackend.ANSWER
        assert student.texts["rationale"] == ""  # explain off: the rationale is not even generated
        # explain on: the next answer carries the student's own rationale, shown
        await pilot.press("ctrl+r")
        assert app.screen.query_one("#explain-switch", Switch).value
        await pilot.press(*"And Mary?", "enter")
        second = list(app.screen.query(Exchange))[-1].reply("answer")
        await wait_until(pilot, lambda: second.texts["rationale"] == EchoBackend.RATIONALE)
        shown = second.query_one(".rationale", Static)
        assert shown.styles.display == "block" and "explain: Jack gives away" in str(shown.render())
        await pilot.press("ctrl+r")
        assert shown.styles.display == "none"
        await wait_until(pilot, lambda: len(read_chat(run)) == 2)
    history = read_chat(run)
    assert [record["question"] for record in history] == ["How many pens?", "And Mary?"]
    assert history[1]["rationale"] == EchoBackend.RATIONALE and "answer" in history[1]["seconds"]
    # the history comes back when the run's chat is opened again
    app = make_app(tmp_path, run_dir=run, mode="chat")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        exchanges = list(app.screen.query(Exchange))
        assert [e.question for e in exchanges] == ["How many pens?", "And Mary?"]
        await pilot.pause()
        assert exchanges[1].reply("answer").texts["rationale"] == EchoBackend.RATIONALE


async def test_chat_asks_the_teacher_side_by_side_when_it_fits(tmp_path):
    teacher = tmp_path / "tiny-teacher"
    fake_student(teacher)  # any local model folder: the echo backend does not read it
    run = make_run(tmp_path, "with-teacher", teacher=str(teacher))
    app = make_app(tmp_path, run_dir=run, mode="chat")
    async with app.run_test(size=SIZE) as pilot:
        switch = app.screen.query_one("#teacher-switch", Switch)
        assert not switch.disabled
        await pilot.press("ctrl+b")
        assert switch.value
        await pilot.press(*"How many pens?", "enter")
        exchange = app.screen.query_one(Exchange)
        await wait_until(pilot, lambda: exchange.reply("teacher").texts["answer"] == EchoBackend.TEACHER)
        assert exchange.reply("answer").texts["answer"] == EchoBackend.ANSWER
        assert exchange.reply("teacher").border_subtitle.endswith(" s")  # its own latency
        await wait_until(pilot, lambda: len(read_chat(run)) == 1)
    record = read_chat(run)[0]
    assert record["teacher"] == EchoBackend.TEACHER and set(record["seconds"]) == {"answer", "teacher"}


async def test_chat_disables_a_teacher_that_is_missing(tmp_path):
    run = make_run(tmp_path, "big", teacher="mlx-community/Llama-3.3-70B-Instruct-4bit")
    app = make_app(tmp_path, run_dir=run, mode="chat")
    async with app.run_test(size=SIZE) as pilot:
        switch = app.screen.query_one("#teacher-switch", Switch)
        assert switch.disabled
        assert str(switch.tooltip) == "teacher mlx-community/Llama-3.3-70B-Instruct-4bit is not on this machine"
        await pilot.press("ctrl+b")
        assert not switch.value


async def test_chat_disables_a_teacher_that_does_not_fit(tmp_path):
    teacher = fake_student(tmp_path / "big-teacher")
    (teacher / "model.safetensors").write_bytes(b"x" * 8_000)  # needs 10.0 kB with the load overhead
    run = make_run(tmp_path, "big", teacher=str(teacher))
    app = make_app(tmp_path, run_dir=run, mode="chat", available_memory=lambda: 5_000)
    async with app.run_test(size=SIZE) as pilot:
        switch = app.screen.query_one("#teacher-switch", Switch)
        assert switch.disabled
        assert str(switch.tooltip).startswith(f"teacher {teacher} needs ")
        await pilot.press("ctrl+b")
        assert not switch.value


async def test_chat_without_a_student_says_so(tmp_path):
    run = make_run(tmp_path, "early", with_student=False, events=sample_events()[:20])
    backend = EchoBackend()
    app = make_app(tmp_path, run_dir=run, mode="chat", chat_backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        assert "no trained student" in text_of(app, "#chat-model")
        await pilot.press(*"hi", "enter")
        await pilot.pause()
        assert not list(app.screen.query(Exchange)) and backend.loaded == []


# ---- command palette and themes --------------------------------------------------------------


async def test_command_palette_starts_the_demo(tmp_path):
    starter = ScriptedStarter(block_after=5)
    app = make_app(tmp_path, starter=starter)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"start demo")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: starter.started != [])
        assert starter.started == [(tmp_path / "demo", True)]


async def test_light_and_dark_themes(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        dark = app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark != dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark == dark
