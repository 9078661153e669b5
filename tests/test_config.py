"""Run configs: the examples parse and document every key; bad keys and values are named."""

import dataclasses
import sys
from pathlib import Path

import pytest

from mlx_distill.config import _DERIVED_TRAIN_KEYS, TaskConfig, TeacherConfig, TrainConfig, load_config, parse_config
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
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"} - _DERIVED_TRAIN_KEYS
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


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("train", "max_steps", "6", ["train.max_steps", "'6'", "an integer"]),
        ("train", "max_steps", 6.5, ["train.max_steps", "6.5", "an integer"]),
        ("train", "max_steps", True, ["train.max_steps", "True", "an integer"]),
        ("train", "lr", "fast", ["train.lr", "'fast'", "a number"]),
        ("train", "alpha", "half", ["train.alpha", "a number"]),
        ("train", "seed", "zero", ["train.seed", "an integer"]),
        ("train", "compile", "yes", ["train.compile", "true or false"]),
        ("train", "baselines", "finetune", ["train.baselines", "a list of strings"]),
        ("teacher", "enabled", "yes", ["teacher.enabled", "true or false"]),
        ("teacher", "limit", -5, ["teacher.limit", "-5"]),
        ("teacher", "batch_size", 0, ["teacher.batch_size", "at least 1"]),
        ("task", "columns", {"input": 3}, ["task.columns", "a table of strings"]),
        ("train", "eval_batch_size", 0, ["eval_batch_size", "at least 1"]),
        ("train", "clip_grad_norm", -1.0, ["clip_grad_norm", "negative"]),
        ("train", "eval_every", -1, ["eval_every", "negative"]),
        ("train", "warmup_steps", -1, ["warmup_steps", "negative"]),
        ("train", "lr", float("nan"), ["lr", "nan"]),
        ("train", "lr", float("inf"), ["lr", "inf"]),
        ("train", "lr", 1e30, ["lr", "1e+30"]),
        ("train", "alpha", 1.5, ["alpha", "between 0 and 1"]),
        ("train", "optimizer", "sgd", ["optimizer", "'sgd'", "adamw"]),
    ],
)
def test_each_key_has_one_type_and_a_range(section, key, value, words):
    data = _base()
    data.setdefault(section, {})[key] = value
    with pytest.raises(DistillError) as error:
        parse_config(data, source="c.toml")
    message = str(error.value)
    assert message.startswith("c.toml: ") and "\n" not in message
    for word in words:
        assert word in message, message


def test_an_integer_is_a_valid_float_and_is_kept_as_one():
    config = parse_config({**_base(), "train": {"lr": 1, "alpha": 0}})
    assert config.train.trainer.lr == 1.0 and isinstance(config.train.trainer.lr, float)
    assert config.train.trainer.alpha == 0.0


def test_train_seed_defaults_to_the_task_seed():
    config = parse_config({"task": {"name": "jsonl", "data": "x.jsonl", "seed": 7}})
    assert config.train.trainer.seed == 7
    assert parse_config({**_base(), "train": {"seed": 3}}).train.trainer.seed == 3


@pytest.mark.parametrize("name, words", [
    ("../../etc", ["path separator"]),
    ("a\nb", ["control character"]),
    ("   ", ["empty"]),
    ("a\x00b", ["control character"]),
    ("x" * 300, ["300 characters"]),
    (".hidden", ["starts with '.'"]),
    (" padded", ["space"]),
])
def test_run_names_are_plain_folder_names(name, words):
    with pytest.raises(DistillError) as error:
        parse_config({**_base(), "name": name}, source="c.toml")
    message = str(error.value)
    assert message.startswith("c.toml: name ") and "\n" not in message.replace(repr(name[:40]), "")
    for word in words:
        assert word in message


def test_a_config_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(DistillError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: not UTF-8 text (byte 11); save the config as UTF-8"


@pytest.mark.parametrize("section", ["task", "train"])
def test_a_negative_seed_is_refused(section):
    data = _base()
    data.setdefault(section, {})["seed"] = -1
    with pytest.raises(DistillError, match=f"{section}.seed"):
        parse_config(data, source="c.toml")
