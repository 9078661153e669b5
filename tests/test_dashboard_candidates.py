"""The dashboard keeps a run's candidates apart (#18): a line per candidate in the plots, a row per
candidate in the Training panel, the exported one marked, and step-by-step against finetune."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_distill import events as ev
from mlx_distill.testing.ui_fakes import T0, EchoBackend, ScriptedStarter, make_run
from mlx_distill.tui.app import DistillApp
from mlx_distill.tui.state import DashboardState

CANDIDATES = {"step-by-step-a0.3": (0.80, 0.78), "step-by-step-a0.5": (0.92, 0.84), "finetune": (1.0, 0.80)}
PAYOFF = {"step_by_step": "step-by-step-a0.5", "step_by_step_label": "step-by-step (α 0.5)", "finetune": "finetune",
          "questions": 50, "step_by_step_accuracy": 0.84, "finetune_accuracy": 0.80, "difference": 0.04,
          "low": -0.04, "high": 0.12,
          "verdict": "The teacher's rationales made no measurable difference (+4.0 points, 95% interval -4.0 to +12.0 points)."}


def candidate_events(chosen: str = "step-by-step-a0.5", steps: int = 30) -> list[ev.Event]:
    t = T0
    out: list[ev.Event] = []

    def add(kind, **fields) -> None:
        nonlocal t
        t += 1.0
        out.append(kind(time=t, **fields))

    for stage in ("data", "teacher"):
        add(ev.StageStarted, stage=stage)
        add(ev.StageFinished, stage=stage, seconds=1.0)
    add(ev.StageStarted, stage="train")
    for number, (name, (validation, _)) in enumerate(CANDIDATES.items()):
        rationale = name != "finetune"
        for step in range(1, steps + 1):
            label = 3.0 * (0.9 + 0.03 * number) ** step + 0.1
            add(ev.TrainStep, step=step, total_steps=steps, loss=label, label_loss=label,
                rationale_loss=label + 0.5 if rationale else None, learning_rate=1e-3, tokens_per_second=900.0,
                candidate=name)
            if step % 10 == 0:
                accuracy = validation * step / steps
                add(ev.EvalResult, step=step, split="validation", accuracy=accuracy, correct=int(accuracy * 50),
                    total=50, best=True, candidate=name)
        add(ev.Finished, stage="train", summary={"steps": steps})
    add(ev.CandidateChosen, candidate=chosen, label="step-by-step (α 0.5)", reason="best validation accuracy: 92.0%")
    add(ev.StageFinished, stage="train", seconds=30.0, detail="exporting step-by-step (α 0.5)")
    add(ev.StageStarted, stage="evaluate")
    for name, (_, test) in CANDIDATES.items():
        add(ev.EvalResult, step=0, split="test", accuracy=test, correct=int(test * 50), total=50, candidate=name)
    add(ev.Log, message=PAYOFF["verdict"])
    add(ev.StageFinished, stage="evaluate", seconds=3.0, detail="test accuracy 84.0%")
    add(ev.StageStarted, stage="export")
    add(ev.StageFinished, stage="export", seconds=0.2)
    add(ev.Finished, stage="run", summary={"student_test_accuracy": 0.84, "payoff": PAYOFF,
                                           "selection": {"chosen": chosen}})
    return out


def test_each_candidate_keeps_its_own_series_and_row():
    state = DashboardState()
    for event in candidate_events():
        state.apply(event)
    assert list(state.candidates) == list(CANDIDATES)
    for name, (validation, test) in CANDIDATES.items():
        progress = state.candidates[name]
        assert progress.eval_steps == [10, 20, 30] and progress.eval_accuracies[-1] == pytest.approx(validation)
        assert progress.steps == list(range(1, 31)) and progress.test.accuracy == test
    assert state.candidates["finetune"].rationale_steps == []
    rows = state.accuracy_text().splitlines()
    assert rows[0].split() == ["step-by-step", "α0.3", "80%", "78%"]
    assert rows[1].split() == ["✓", "step-by-step", "α0.5", "92%", "84%"]
    assert rows[2].split() == ["finetune", "100%", "80%"]
    assert rows[3] == "vs finetune +4.0 pts [-4.0, +12.0]"
    # The finished panel follows the exported candidate, not the last one trained (the baseline).
    assert state.best_validation.accuracy == pytest.approx(0.92) and state.test.accuracy == 0.84


def test_a_lone_run_reads_as_before():
    state = DashboardState()
    state.apply(ev.TrainStep(step=1, total_steps=2, loss=1.0, label_loss=1.0, rationale_loss=2.0,
                             learning_rate=1e-3, tokens_per_second=1.0))
    state.apply(ev.EvalResult(step=1, split="validation", accuracy=0.5, correct=1, total=2, best=True))
    assert state.accuracy_text() == "validation 50.0% · best 50.0% @1"
    assert state.rationale_losses == [2.0]


@pytest.mark.parametrize("size", [(100, 36), (80, 24)], ids=["100x36", "80x24"])
def test_dashboard_of_a_finished_run_with_candidates(snap_compare, runs_dir, size):
    run = make_run(runs_dir, "demo", events=candidate_events(), accuracy=0.84)
    app = DistillApp(runs_dir, run_dir=run, chat_backend=EchoBackend(), starter=ScriptedStarter(),
                     available_memory=lambda: 16_000_000_000, poll_interval=60, show_timing=False)
    app.animation_level = "none"
    assert snap_compare(app, terminal_size=size)


def test_mid_run_the_panel_names_the_candidate_training_now():
    state = DashboardState()
    events = candidate_events()
    second = next(i for i, e in enumerate(events) if getattr(e, "candidate", "") == "step-by-step-a0.5")
    for event in events[: second + 5]:
        state.apply(event)
    assert state.train_text() == "step-by-step α0.5 · step 5/30"
    rows = state.accuracy_text().splitlines()
    assert rows[0].split() == ["step-by-step", "α0.3", "80%", "—"] and rows[1].startswith("▸ step-by-step α0.5")
