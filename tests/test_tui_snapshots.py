"""Snapshot tests of the main screens (pytest-textual-snapshot).

Deterministic by construction: animation off (frozen progress bars), ETAs and latencies hidden
(``show_timing=False``), fixed event times shown in UTC, a relative runs folder. After a change,
regenerate with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_distill.tui.app import DistillApp
from mlx_distill.tui.model_choices import ModelChoice
from mlx_distill.testing.ui_fakes import T0, EchoBackend, ScriptedStarter, fake_student, make_run

CHOICES = [
    ModelChoice("mlx-community/Qwen2.5-1.5B-Instruct-4bit", "teacher", 3_000_000_000, "1.5B", downloaded=True),
    ModelChoice("mlx-community/Meta-Llama-3.1-70B-Instruct-4bit", "teacher", 42_000_000_000, "70B", fits=False),
    ModelChoice("google/flan-t5-small", "student", 3_000_000_000, "77M", downloaded=True),
]


def make_app(runs_dir: Path, **kwargs) -> DistillApp:
    kwargs.setdefault("starter", ScriptedStarter())
    app = DistillApp(runs_dir, chat_backend=EchoBackend(), choices=CHOICES,
                     available_memory=lambda: 16_000_000_000, poll_interval=60, show_timing=False, **kwargs)
    app.animation_level = "none"
    return app


def three_runs(runs_dir: Path) -> None:
    make_run(runs_dir, "svamp-flan-small", created=T0)
    make_run(runs_dir, "cqa-t5-base", task="cqa", accuracy=0.58, created=T0 - 86400, student="google/t5-v1_1-base",
             teacher="mlx-community/Qwen2.5-7B-Instruct-4bit")
    make_run(runs_dir, "from-the-future", format_version=99, created=T0 - 3 * 86400)


def test_runs_browser(snap_compare, runs_dir):
    three_runs(runs_dir)
    assert snap_compare(make_app(runs_dir), terminal_size=(80, 24))


def test_dashboard_finished_run_80x24(snap_compare, runs_dir):
    run = make_run(runs_dir, "svamp-flan-small")
    assert snap_compare(make_app(runs_dir, run_dir=run), terminal_size=(80, 24))


def test_dashboard_mid_training(snap_compare, runs_dir):
    running = {"data": {"status": "done"}, "teacher": {"status": "done"}, "train": {"status": "running"}}
    run = make_run(runs_dir, "svamp-flan-small", events=[], accuracy=None, state=running)
    starter = ScriptedStarter(block_after=88)
    starter.start(run)  # a live pipeline at training step 33
    assert snap_compare(make_app(runs_dir, run_dir=run, starter=starter), terminal_size=(120, 36))


def test_dashboard_light_theme(snap_compare, runs_dir):
    run = make_run(runs_dir, "svamp-flan-small")

    async def run_before(pilot):
        await pilot.press("ctrl+t")

    assert snap_compare(make_app(runs_dir, run_dir=run), terminal_size=(100, 32), run_before=run_before)


def test_chat_with_rationale_and_teacher(snap_compare, runs_dir):
    teacher = fake_student(runs_dir.parent / "tiny-teacher")
    run = make_run(runs_dir, "svamp-flan-small", teacher=str(teacher.resolve()))

    async def run_before(pilot):
        await pilot.press("ctrl+r", "ctrl+b")
        await pilot.press(*"Jack had 8 pens and gave 3 to Mary. How many are left?", "enter")
        for _ in range(100):
            if len(pilot.app.screen.query(".teacher .answer")) and "answer is 5" in str(
                    pilot.app.screen.query_one(".teacher .answer").render()):
                break
            await pilot.pause(0.05)
        await pilot.pause()

    assert snap_compare(make_app(runs_dir, run_dir=run, mode="chat"), terminal_size=(100, 30), run_before=run_before)


def test_new_run_form_with_errors(snap_compare, runs_dir):
    async def run_before(pilot):
        await pilot.press("f2")
        await pilot.pause()
        pilot.app.screen.query_one("#teacher-select").value = "mlx-community/Meta-Llama-3.1-70B-Instruct-4bit"
        await pilot.press("ctrl+s")
        await pilot.pause()

    assert snap_compare(make_app(runs_dir), terminal_size=(100, 40), run_before=run_before)
