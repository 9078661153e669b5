"""The New run form's data field: empty (a built-in task's hub copy), a hub id, or a local path.

Only the hub is missing here: ``offline_hf_cache`` fills a temporary HF cache by hand and switches
the hub off, so the form's data check goes through the real ``load_task`` and ``snapshot_download``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from mlx_distill.config import load_config
from mlx_distill.pipeline import CONFIG_FILE
from mlx_distill.testing.hub_cache import offline_hf_cache, put_svamp, svamp_record
from mlx_distill.testing.ui_fakes import EchoBackend, ScriptedStarter
from mlx_distill.tui.app import DistillApp
from mlx_distill.tui.model_choices import ModelChoice
from mlx_distill.tui.screens.dashboard import DashboardScreen
from mlx_distill.tui.screens.new_run import NewRunScreen

SIZE = (100, 40)
TEACHER = "mlx-community/Qwen2.5-1.5B-Instruct-4bit"
CHOICES = [ModelChoice(TEACHER, "teacher", 2_000_000_000, "1.5B", downloaded=True),
           ModelChoice("google/flan-t5-small", "student", 3_000_000_000, "77M", downloaded=True)]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    return offline_hf_cache(tmp_path / "hf", monkeypatch)


def make_app(runs_dir: Path, starter: ScriptedStarter) -> DistillApp:
    app = DistillApp(runs_dir, starter=starter, chat_backend=EchoBackend(), choices=CHOICES,
                     available_memory=lambda: 16_000_000_000, poll_interval=60)
    app.animation_level = "none"
    return app


async def open_form(pilot, task: str, data: str, teacher: str = TEACHER) -> NewRunScreen:
    await pilot.press("f2")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, NewRunScreen)
    screen.query_one("#task", Select).value = task
    screen.query_one("#data-path", Input).value = data
    screen.query_one("#teacher-input", Input).value = teacher
    screen.query_one("#student-input", Input).value = "google/flan-t5-small"
    screen.query_one("#run-name", Input).value = "my-run"
    await pilot.pause()
    return screen


def text_of(app: DistillApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def start(pilot) -> None:
    await pilot.press("ctrl+s")
    await pilot.app.workers.wait_for_complete()  # the data check; it calls back before it ends
    await pilot.pause()


@pytest.mark.parametrize("data", ["", "ChilleD/SVAMP", "hf:ChilleD/SVAMP"])
async def test_empty_data_or_a_hub_id_starts_from_the_hub_copy(tmp_path, hf_cache, data):
    put_svamp(hf_cache, [svamp_record(i) for i in range(1, 51)])
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(pilot, "svamp", data)
        assert "empty: the hub copy hf:ChilleD/SVAMP" in str(screen.query_one("#data-hint", Static).render())
        await start(pilot)
        assert isinstance(app.screen, DashboardScreen), text_of(app, "#form-error")
    run_dir = tmp_path / "runs" / "my-run"
    assert starter.started == [(run_dir, False)]
    assert load_config(run_dir / CONFIG_FILE).task.data == "hf:ChilleD/SVAMP"


async def test_a_local_file_still_works_and_is_saved_as_an_absolute_path(tmp_path, hf_cache, monkeypatch):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"input": f"{i} + 2", "label": str(i + 2)}) + "\n" for i in range(40)))
    monkeypatch.chdir(tmp_path)
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, "jsonl", "mine.jsonl")
        await start(pilot)
        assert isinstance(app.screen, DashboardScreen), text_of(app, "#form-error")
    assert load_config(tmp_path / "runs" / "my-run" / CONFIG_FILE).task.data == str(data.resolve())


@pytest.mark.parametrize("task, data, expected", [
    ("jsonl", "", "no data for the jsonl task; give its file or folder"),
    ("svamp", "hf:not a repo!", "'hf:not a repo!' is not a hub dataset; write hf:ORG/NAME[:CONFIG][@REVISION]"),
    ("csv", "hf:ChilleD/SVAMP", "hub dataset hf:ChilleD/SVAMP cannot be read by the csv task"),
    ("svamp", "./no/such.json", "data path ./no/such.json does not exist"),
])
async def test_bad_data_is_one_line_in_the_form(tmp_path, hf_cache, task, data, expected):
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, task, data)
        await start(pilot)
        assert isinstance(app.screen, NewRunScreen)
        error = text_of(app, "#form-error")
    assert error.startswith(f"• {expected}") and error.count("•") == 1 and "Traceback" not in error
    assert starter.started == []


async def test_a_hub_copy_not_in_the_cache_says_how_to_fetch_it(tmp_path, hf_cache):
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, "svamp", "")
        await start(pilot)
        assert isinstance(app.screen, NewRunScreen)
        error = text_of(app, "#form-error")
    assert "dataset hf:ChilleD/SVAMP is not in the Hugging Face cache" in error
    assert "mlx-distill fetch-data svamp" in error and "\n" not in error
    assert starter.started == []


async def test_the_hint_follows_the_task(tmp_path, hf_cache):
    app = make_app(tmp_path / "runs", ScriptedStarter())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(pilot, "anli", "")
        assert "hf:facebook/anli:r1" in str(screen.query_one("#data-hint", Static).render())
        screen.query_one("#task", Select).value = "jsonl"
        await pilot.pause()
        hint = str(screen.query_one("#data-hint", Static).render())
        assert "hf:" not in hint and "local file" in hint


async def test_an_unpicked_catalog_model_is_no_model(tmp_path, hf_cache):
    # Textual 8's empty Select holds Select.NULL; it must not be taken as a model named "Select.NULL".
    put_svamp(hf_cache, [svamp_record(i) for i in range(1, 51)])
    starter = ScriptedStarter()
    app = make_app(tmp_path / "runs", starter)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot, "svamp", "", teacher="")
        await start(pilot)
        assert "no teacher chosen" in text_of(app, "#form-error")
    assert starter.started == []
