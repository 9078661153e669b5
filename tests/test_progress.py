"""The headless progress printer renders every event kind from real event objects."""

import io

from mlx_distill import events as ev
from mlx_distill.progress import ProgressPrinter, bar, format_duration


def _render_all(printer):
    printer(ev.StageStarted(stage="teacher", detail="tiny"))
    printer(ev.TeacherProgress(done=5, total=10, accepted=4, parse_failures=1, generated_tokens=100,
                               generation_tps=12.5, prompt_tps=80.0, eta_seconds=65))
    printer(ev.TeacherProgress(done=10, total=10, accepted=8, parse_failures=1, generated_tokens=200,
                               generation_tps=12.5, prompt_tps=80.0, eta_seconds=0))
    printer(ev.TrainStep(step=10, total_steps=10, loss=1.25, label_loss=1.0, rationale_loss=1.5,
                         learning_rate=1e-3, tokens_per_second=300.0, eta_seconds=0))
    printer(ev.EvalResult(step=10, split="validation", accuracy=0.75, correct=3, total=4, best=True))
    printer(ev.Failed(stage="train", error="boom"))
    printer(ev.Finished(stage="run", stopped=True, resume_hint="rerun the same command"))
    printer.close()


def test_plain_stream_prints_each_final_progress_line():
    out = io.StringIO()
    _render_all(ProgressPrinter(out, interval=3600))
    text = out.getvalue()
    assert "▶ teacher: tiny" in text
    assert "10/10 accepted 80%" in text
    assert "5/10" in text  # the first progress line is printed at once
    assert "rationale 1.500" in text
    assert "validation accuracy at step 10: 75.0% (3/4) (best)" in text
    assert "boom" not in text  # the CLI prints the error once, as it exits
    assert "rerun the same command" in text
    assert "\r" not in text


def test_quiet_hides_progress_but_keeps_results():
    out = io.StringIO()
    _render_all(ProgressPrinter(out, quiet=True))
    text = out.getvalue()
    assert "accepted" not in text and "tok/s" not in text
    assert "75.0%" in text


def test_event_json_round_trip():
    event = ev.TrainStep(step=3, total_steps=9, loss=0.5, label_loss=0.4, rationale_loss=None,
                         learning_rate=1e-4, tokens_per_second=10.0)
    again = ev.event_from_json(event.to_json())
    assert again == event
    assert ev.event_from_dict({**event.to_dict(), "field_from_newer_version": 1}) == event


def test_helpers():
    assert format_duration(3725) == "1h02m"
    assert format_duration(65) == "1m05s"
    assert format_duration(None) == "?"
    assert bar(1, 4, width=4).startswith("█░░░")
