"""The prompt lab: samples from validation only, exemplars from training only, trials scored from
the real teacher stage's records, the search's second sample kept apart, and adopting a prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.commands.demo import demo_data_dir
from mlx_distill.config import load_config
from mlx_distill.data import load_task
from mlx_distill.errors import DistillError
from mlx_distill.prompt_lab import (
    Trial,
    adopt_prompt,
    answer_position,
    choose_set,
    candidate_sets,
    draw_samples,
    read_trials,
    search_exemplars,
    try_prompt,
    with_rationales,
)
from mlx_distill.teacher import exemplar_prompt_text, parse_prompt_text


@pytest.fixture(scope="module")
def demo_task():
    return load_task("jsonl", demo_data_dir(), seed=0)


def _config(tmp_path: Path, teacher: Path, **teacher_keys) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text("# my lab run\n" + tomli_w.dumps({
        "name": "lab", "runs_dir": str(tmp_path / "runs"),
        "task": {"name": "jsonl", "data": str(demo_data_dir())},
        "teacher": {"model": str(teacher), "batch_size": 8, "max_tokens": 12, **teacher_keys},
        "train": {"rationale_source": "human"},
    }))
    return path


def test_samples_come_from_validation_only_and_are_disjoint(demo_task):
    first, second = draw_samples(demo_task, 24, seed=3, count=2)
    validation = {e.id for e in demo_task.validation}
    assert len(first) == len(second) == 24
    assert {e.id for e in first} <= validation and {e.id for e in second} <= validation
    assert not {e.id for e in first} & {e.id for e in second}
    assert not {e.id for e in first + second} & {e.id for e in demo_task.test + demo_task.train}
    assert [e.id for e in draw_samples(demo_task, 24, seed=3, count=2)[0]] == [e.id for e in first]


def test_a_validation_split_too_small_is_named(demo_task):
    import dataclasses

    tiny = dataclasses.replace(demo_task, validation=demo_task.validation[:5])
    with pytest.raises(DistillError, match="validation split has 5 labelled questions"):
        draw_samples(tiny, 24, seed=0, count=2)


def test_candidate_sets_vary_labels_and_answer_positions(demo_task):
    rows = with_rationales(demo_task.train)
    assert rows and all(answer_position(r) >= 0 for r in rows)  # the demo's choices are inside the question
    sets = candidate_sets(rows, count=6, size=4, seed=0)
    for chosen in sets:
        assert len(chosen) == 4
        assert len({r.label for r in chosen}) == 4 and len({answer_position(r) for r in chosen}) >= 3
        assert {r.id for r in chosen} <= {e.id for e in demo_task.train}
    assert len({tuple(r.id for r in chosen) for chosen in sets}) == 6  # six different sets


def test_a_candidate_set_becomes_the_teacher_s_exemplar_prompt(demo_task):
    chosen = candidate_sets(with_rationales(demo_task.train), count=1, size=4, seed=1)[0]
    parsed = parse_prompt_text(exemplar_prompt_text(chosen))
    assert len(parsed.exemplars) == 4
    for row, exemplar in zip(chosen, parsed.exemplars):
        assert row.input.strip() in exemplar.question and exemplar.answer.endswith(f"So the answer is {row.label}.")


def test_answer_position_reads_the_choices_in_the_question(demo_task):
    import dataclasses

    example = dataclasses.replace(demo_task.train[0], input="Which kind is the robin?\nAnswer Choices:\n(a) fish\n(b) bird",
                                  label="bird", choices=())
    assert answer_position(example) == 1
    assert answer_position(dataclasses.replace(example, label="cat")) == -1


def test_a_trial_scores_the_stage_records_and_is_kept(tmp_path, demo_models, demo_task):
    config = load_config(_config(tmp_path, demo_models["teacher"], limit=30))
    trial, shown = try_prompt(config, demo_task, n=8, seed=0)
    assert trial.questions == len(shown) == 8
    assert trial.accepted + trial.parse_failures + trial.disagreements == 8  # filter gold, restating kept
    assert sum(trial.gold.values()) == sum(trial.answers.values()) == 8
    assert trial.stage_questions == 30 and trial.estimated_stage_seconds > 0
    lab = tmp_path / "runs" / "lab" / "prompt-lab"
    records = [json.loads(line) for line in (lab / "records" / f"{trial.prompt_hash}-{trial.sample}.jsonl")
               .read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(e.id for e in shown)
    assert sum(r["accepted"] for r in records) == trial.accepted
    assert [t.prompt_hash for t in read_trials(lab)] == [trial.prompt_hash]


def test_search_keeps_the_second_sample_apart_and_exemplars_out_of_samples(tmp_path, demo_models, demo_task):
    config = load_config(_config(tmp_path, demo_models["teacher"]))
    result = search_exemplars(config, demo_task, k=2, n=6, seed=0)
    assert len(result.candidates) == 2
    assert not result.bootstrapped  # the demo rows carry reference rationales
    # The tiny random teacher gets nothing right with any prompt: no set beats the current one.
    assert result.best is result.default_first and result.best_second is result.default_second
    lab = tmp_path / "runs" / "lab" / "prompt-lab"
    trials = read_trials(lab)
    assert len(trials) == 1 + 2 + 1
    first, second = result.default_first.sample, result.default_second.sample
    assert first != second and result.best.sample == first and result.best_second.sample == second

    sample_ids = set()
    for trial in trials:
        path = lab / "records" / f"{trial.prompt_hash}-{trial.sample}.jsonl"
        sample_ids |= {json.loads(line)["id"] for line in path.read_text().splitlines()}
    exemplar_ids = {i for ids in result.exemplar_ids for i in ids}
    assert sample_ids <= {e.id for e in demo_task.validation}
    assert exemplar_ids <= {e.id for e in demo_task.train} and not exemplar_ids & sample_ids
    assert result.gain == result.best_second.accept_rate - result.default_second.accept_rate


def _trial(accepted: int, restating: int = 0, parse_failures: int = 0) -> Trial:
    return Trial("h", "p", "t", "s", 10, accepted, parse_failures, 10 - accepted - parse_failures, restating,
                 {}, {}, 1.0, 1.0, 0.0, 1.0, 10)


def test_a_set_is_chosen_only_when_it_beats_the_current_prompt_on_the_first_sample():
    current = _trial(6)
    assert choose_set(current, [_trial(5), _trial(6)]) is None  # a tie keeps the current prompt
    assert choose_set(current, [_trial(5), _trial(8), _trial(7)]) == 1
    assert choose_set(current, [_trial(7, restating=7), _trial(7, restating=2)]) == 1  # fewer restating
    assert choose_set(current, []) is None


def test_adopting_a_prompt_keeps_the_config_s_comments_and_is_read_back(tmp_path, demo_models):
    path = _config(tmp_path, demo_models["teacher"])
    prompt = tmp_path / "p.txt"
    prompt.write_text("Answer.\n---\nQ: {input}\nA:")
    adopt_prompt(path, prompt)
    assert path.read_text().startswith("# my lab run\n")
    assert load_config(path).teacher.prompt_file == str(prompt.resolve())
    other = tmp_path / "q.txt"
    other.write_text("Answer again.\n---\nQ: {input}\nA:")
    adopt_prompt(path, other)
    assert load_config(path).teacher.prompt_file == str(other.resolve())
    assert path.read_text().count("prompt_file") == 1


def test_try_through_the_cli_prints_the_counts_and_adopts(tmp_path, demo_models):
    from mlx_distill.testing.cli_runner import run_cli

    path = _config(tmp_path, demo_models["teacher"])
    result = run_cli("try", path, "--n", "6", "--adopt", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "on 6 validation questions" in result.stdout and "accepted" in result.stdout
    assert "the full stage (" in result.stdout and "adopted:" in result.stdout
    assert load_config(path).teacher.prompt_file.endswith(".txt")
