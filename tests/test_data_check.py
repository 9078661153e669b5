"""`mlx-distill data CONFIG`, and every config under examples/ on a fresh clone (issue #20).

Only the hub is mocked: a temporary HF cache (HF_HUB_OFFLINE=1) holds small copies of each
dataset in its real hub layout; the paper's archive is written in its published layout.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import tomli_w

from mlx_distill.config import load_config
from mlx_distill.data import parse_hub_spec
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli
from mlx_distill.testing.hub_cache import offline_hf_cache, put_cqa, put_dataset, put_svamp, svamp_record
from mlx_distill.testing.paper_archive import write_copy, write_palm

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("entailment", "neutral", "contradiction")


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """Every built-in task's default hub copy, scaled down, in an offline HF cache; the paper's
    archive (CQA and SVAMP, PaLM) in mlx-distill's cache."""
    cache = offline_hf_cache(tmp_path / "hf", monkeypatch)
    put_svamp(cache, [svamp_record(i) for i in range(1, 51)])
    put_cqa(cache)
    nli = lambda n, p: [{"premise": f"{p} premise {i}", "hypothesis": f"hypothesis {i}", "label": i % 3,  # noqa: E731
                         "explanation_1": f"why {i}", "explanation_2": "", "explanation_3": ""} for i in range(n)]
    put_dataset(cache, "esnli", {f"plain_text/{s}/0000.parquet": nli(n, s) for s, n in
                                 (("train", 30), ("validation", 5), ("test", 5))}, revision="refs/convert/parquet")
    put_dataset(cache, "facebook/anli", {f"plain_text/{s}_r1-00000-of-00001.parquet":
                                         [{"uid": f"{s}{i}", "reason": "", **r} for i, r in enumerate(nli(n, s))]
                                         for s, n in (("train", 20), ("dev", 4), ("test", 4))})
    monkeypatch.setenv("MLX_DISTILL_CACHE", str(tmp_path / "mlx-distill"))
    datasets = tmp_path / "mlx-distill" / "distilling-step-by-step" / "datasets"
    write_copy(datasets, "cqa", "train", [{"id": f"t{i}"} for i in range(20)])
    write_palm(datasets, "cqa", "train", [f"Thing {i} is there. So the answer is (a) place {i}a." for i in range(20)])
    write_copy(datasets, "svamp", "train",
               [{"input": f"Jack had {i} apples.\nHow many now{i}?", "label": f"( {i}.0 + 1.0 )"} for i in range(1, 51)])
    write_palm(datasets, "svamp", "train", [f"{i} + 1. The answer is ( {i}.0 + 1.0 )." for i in range(1, 51)])
    return cache


def _config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"runs_dir": str(tmp_path / "runs"), **sections}))
    return path


def test_data_check_prints_splits_labels_coverage_lengths_and_examples(hub, tmp_path):
    path = _config(tmp_path, task={"name": "cqa"}, teacher={"enabled": False, "filter": "all"},
                   train={"rationale_source": "paper-palm", "max_input_tokens": 12})
    done = run_cli("data", path, "--examples", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "splits: 18 train / 2 validation / 8 test" in out
    assert "test: the dataset's validation (dev) split, as in the paper" in out
    assert "labels (train): 18 distinct" in out
    positions = re.search(r"answer position \(train\): \(a\) (\d+), \(b\) (\d+), \(c\) (\d+), \(d\) (\d+), \(e\) (\d+)", out)
    assert positions and sum(map(int, positions.groups())) == 18
    assert "human (the dataset's own): 18/18 (100%)" in out
    assert "paper-palm: 18/18 (100%)" in out and "<- used" in out.split("paper-palm")[1].splitlines()[0]
    assert "the student reads 12 tokens" in out and "train inputs are longer and will be cut" in out
    assert out.count("\nexample ") == 1 and "Answer Choices:" in out


def test_data_check_refuses_a_missing_dataset_in_one_line(tmp_path, monkeypatch):
    offline_hf_cache(tmp_path / "hf", monkeypatch)
    path = _config(tmp_path, task={"name": "anli"}, teacher={"enabled": False}, train={"rationale_source": "none"})
    assert_one_line_error(run_cli("data", path), "hf:facebook/anli:r1", "mlx-distill fetch-data anli")


def test_every_example_config_validates_and_reads_its_data_on_a_fresh_clone(hub, tmp_path):
    # A clone has examples/ and no ../shared beside it.
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "examples", clone / "examples")
    configs = sorted((clone / "examples").rglob("*.toml"))
    assert {p.name for p in configs} >= {"svamp.toml", "cqa.toml", "esnli.toml", "anli.toml",
                                          "cqa-paper.toml", "svamp-paper.toml"}
    for path in configs:
        text = path.read_text()
        assert "/work/" not in text and "shared/data" not in text, path
        config = load_config(path)
        for value in (config.task.data, config.task.human_rationales, config.teacher.prompt_file,
                      config.train.paper_rationales, config.runs_dir):
            if value and parse_hub_spec(value) is None:
                assert Path(value).resolve().is_relative_to(clone.resolve()), (path.name, value)
        done = run_cli("data", path, "--examples", "0")
        assert done.returncode == 0, (path.name, done.stderr)
        assert "splits: " in done.stdout
