"""The prompt lab's search loads the teacher once for all its trials and releases it at the end."""

from __future__ import annotations

import tomli_w

from mlx_distill.config import load_config
from mlx_distill.data import load_task
from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.events import TeacherLoaded, TeacherReleased
from mlx_distill.prompt_lab import search_exemplars, try_prompt
from mlx_distill.teacher import current_teacher


def _config(tmp_path, teacher):
    path = tmp_path / "lab.toml"
    path.write_text(tomli_w.dumps({
        "name": "lab", "runs_dir": str(tmp_path / "runs"), "task": {"name": "jsonl", "data": str(demo_data_dir())},
        "teacher": {"model": str(teacher), "batch_size": 8, "max_tokens": 12},
        "train": {"rationale_source": "human"}}))
    return path


def test_one_teacher_load_for_every_trial_of_a_search(tmp_path, demo_models):
    config = load_config(_config(tmp_path, demo_models["teacher"]))
    task = load_task("jsonl", demo_data_dir(), seed=0)
    events = []
    result = search_exemplars(config, task, k=2, n=6, seed=0, on_event=events.append)
    assert len(result.candidates) == 2  # four trials at least: current, two candidates, second sample
    assert sum(isinstance(e, TeacherLoaded) for e in events) == 1
    assert sum(isinstance(e, TeacherReleased) for e in events) == 1 and current_teacher() is None
    # Every trial's estimate of the full stage still counts the one load the search paid.
    first_load = next(e.seconds for e in events if isinstance(e, TeacherLoaded))
    for trial in (*result.candidates, result.default_second, result.best_second):  # after the first
        assert trial.load_seconds >= first_load and trial.estimated_stage_seconds >= first_load
    # A single trial still loads and releases its own teacher.
    events.clear()
    try_prompt(config, task, n=5, seed=1, on_event=events.append)
    assert [type(e) for e in events if isinstance(e, (TeacherLoaded, TeacherReleased))] == [TeacherLoaded,
                                                                                            TeacherReleased]
    assert current_teacher() is None
