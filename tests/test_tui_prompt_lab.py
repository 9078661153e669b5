"""The Prompt lab screen (F5): the run's prompt in an editor, a trial on the real (tiny) teacher run
on the app's engine thread, the trials table with its examples, and "Use this prompt"."""

from __future__ import annotations

import json
from pathlib import Path

import tomli_w
from textual.widgets import DataTable, Static, TextArea

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.config import load_config
from mlx_distill.files import write_jsonl_atomic
from mlx_distill.prompt_lab import Trial, prompt_hash, save_prompt
from mlx_distill.tui.app import DistillApp
from mlx_distill.tui.screens.prompt_lab import PromptLabScreen

SMALL = (80, 24)


def _run_folder(runs: Path, teacher: Path, name: str = "lab-run") -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(tomli_w.dumps({
        "name": name, "runs_dir": str(runs), "task": {"name": "jsonl", "data": str(demo_data_dir())},
        "teacher": {"model": str(teacher), "batch_size": 8, "max_tokens": 12},
        "train": {"rationale_source": "human"},
    }))
    return run


def _app(runs: Path, run: Path) -> DistillApp:
    app = DistillApp(runs, run_dir=run, mode="lab", poll_interval=60, show_timing=False,
                     available_memory=lambda: 16_000_000_000, choices=[])
    app.animation_level = "none"
    return app


async def _wait(pilot, condition, tries: int = 600) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


async def test_try_an_edited_prompt_then_use_it(tmp_path, demo_models):
    run = _run_folder(tmp_path / "runs", demo_models["teacher"])
    app = _app(tmp_path / "runs", run)
    async with app.run_test(size=SMALL) as pilot:
        screen = app.screen
        assert isinstance(screen, PromptLabScreen)
        editor = screen.query_one("#lab-prompt", TextArea)
        # The run's current prompt: a few-shot prompt from the demo's own training rows.
        assert editor.text.count("\n---\n") == 5 and "So the answer is" in editor.text
        edited = "Name the animal's group, then end with: So the answer is <group>.\n---\nQ: {input}\nA:"
        editor.load_text(edited)
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: not screen.running and screen.trials)
        table = screen.query_one("#lab-trials", DataTable)
        assert table.row_count == 1
        assert screen.trials[0].prompt_hash == prompt_hash(edited) and screen.trials[0].questions == 24
        examples = str(screen.query_one("#lab-examples-text", Static).render())
        assert "gold:" in examples and "teacher:" in examples
        await pilot.press("ctrl+u")
        await pilot.pause()
    saved = load_config(run / "config.toml").teacher.prompt_file
    assert saved and Path(saved).read_text() == edited


async def test_use_prompt_is_refused_once_the_teacher_stage_ran(tmp_path, demo_models):
    run = _run_folder(tmp_path / "runs", demo_models["teacher"])
    (run / "state.json").write_text(json.dumps({"format_version": 1, "stages": {"teacher": {"status": "done"}}}))
    before = (run / "config.toml").read_text()
    app = _app(tmp_path / "runs", run)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("ctrl+u")
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("teacher stage has run" in note and "--redo teacher" in note for note in notes)
    assert (run / "config.toml").read_text() == before


async def test_a_bad_prompt_is_not_tried(tmp_path, demo_models):
    run = _run_folder(tmp_path / "runs", demo_models["teacher"])
    app = _app(tmp_path / "runs", run)
    async with app.run_test(size=SMALL) as pilot:
        app.screen.query_one("#lab-prompt", TextArea).load_text("no placeholder here")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not app.screen.running
        assert any("{input}" in n.message for n in app._notifications)


def _recorded_lab(run: Path) -> None:
    """Two trials as the lab writes them (fixed numbers, for a picture that does not change)."""
    lab = run / "prompt-lab"
    for folder in ("samples", "records"):
        (lab / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"demo-validation-{i:04d}" for i in range(3)]
    rows = [json.loads(line) for line in (demo_data_dir() / "validation.jsonl").read_text().splitlines()[:3]]
    write_jsonl_atomic(lab / "samples" / "s1.jsonl", [{"id": r["id"], "input": r["input"], "label": r["label"]}
                                                       for r in rows])
    for label, text, answers in (("current prompt", "Answer.\n---\nQ: {input}\nA:", ["bird", "fish", "fish"]),
                                 ("edited prompt", "Think.\n---\nQ: {input}\nA:", [r["label"] for r in rows])):
        path = save_prompt(lab, text)
        records = [{"id": i, "rationale": f"It has the marks of a {a}.", "answer": a, "parse_ok": True,
                    "accepted": a == r["label"], "agrees": a == r["label"], "restates_answer": False,
                    "rejected_because": "" if a == r["label"] else "disagrees with the gold label"}
                   for i, a, r in zip(ids, answers, rows)]
        write_jsonl_atomic(lab / "records" / f"{prompt_hash(text)}-s1.jsonl", records)
        accepted = sum(r["accepted"] for r in records)
        trial = Trial(prompt_hash(text), str(path), label, "s1", 3, accepted, 0, 3 - accepted, 0, {}, {}, 20.0,
                      0.5, 1.0, 100.0, 200, created=0.0)
        with (lab / "trials.jsonl").open("a") as handle:
            handle.write(json.dumps(trial.to_dict()) + "\n")


def test_lab_at_80x24(snap_compare, tmp_path, demo_models):
    run = _run_folder(tmp_path / "runs", demo_models["teacher"], name="snap")
    _recorded_lab(run)

    async def show_trials(pilot):
        pilot.app.screen.query_one("#lab-tabs").active = "lab-trials-tab"
        await pilot.pause()

    assert snap_compare(_app(tmp_path / "runs", run), terminal_size=SMALL, run_before=show_trials)
