"""Run configs: the examples parse and document every key; bad keys and values are named."""

import dataclasses
import sys
from pathlib import Path

import pytest

from mlx_distill.config import TaskConfig, TeacherConfig, TrainConfig, load_config, parse_config
from mlx_distill.errors import DistillError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["svamp.toml", "cqa.toml"])
def test_examples_parse_and_show_every_key(name):
    config = load_config(EXAMPLES / name)
    assert config.teacher.model and config.train.student
    data = tomllib.loads((EXAMPLES / name).read_text())
    for section, cls in (("task", TaskConfig), ("teacher", TeacherConfig)):
        assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, section
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "human_rationales"}
    assert train_keys <= set(data["train"]), train_keys - set(data["train"])


def _base() -> dict:
    return {"task": {"name": "jsonl", "data": "x.jsonl"}}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"bogus": 1}, ["'bogus'"]),
        ({"task": {"name": "jsonl", "data": "x", "colums": {}}}, ["task.colums"]),
        ({"train": {"lr_rate": 1.0}}, ["train.lr_rate"]),
        ({"task": {"name": "nope", "data": "x"}}, ["unknown task 'nope'", "svamp"]),
        ({"train": {"method": "magic"}}, ["train.method 'magic'"]),
        ({"teacher": {"filter": "some"}}, ["teacher.filter"]),
        ({"format_version": 99}, ["newer", "upgrade"]),
        ({"teacher": {"enabled": False}}, ["rationale_source"]),
    ],
)
def test_bad_configs_name_the_problem(change, words):
    data = {**_base(), **change}
    with pytest.raises(DistillError) as error:
        parse_config(data, source="c.toml")
    for word in words:
        assert word in str(error.value)
    assert "\n" not in str(error.value)


def test_resolved_config_round_trips(tmp_path):
    config = parse_config({**_base(), "train": {"alpha": 0.3, "max_steps": 7}}, base_dir=tmp_path)
    assert config.task.data == str(tmp_path / "x.jsonl")
    again = parse_config(tomllib.loads(config.to_toml()))
    assert again.to_dict() == config.to_dict()
    assert (again.train.trainer.alpha, again.train.trainer.max_steps) == (0.3, 7)
