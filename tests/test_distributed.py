"""Two ranks on loopback (``mlx.launch --backend ring -n 2``) against one process.

Teacher: the merged rationale file holds every example exactly once, with the same greedy text as
one process, and records already merged or in a rank's part file are kept, not regenerated.
Training: with the same global batch and seed (no dropout) the 2-rank losses equal the 1-rank
losses within float tolerance. Pipeline: ``mlx-distill run --hosts`` on two loopback "hosts".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_distill import distributed
from mlx_distill.events import event_from_json
from mlx_distill.files import lock_holder

from mlx_distill.testing.synthetic_task import build_model, write_task

LAUNCH = str(Path(sys.executable).with_name("mlx.launch"))
PORT = 33000 + (os.getpid() % 200) * 4  # a port block of our own, so parallel runs do not collide


def _launch(*args: str, ranks: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [LAUNCH, "--backend", "ring", "-n", str(ranks), "-p", str(PORT), "--", sys.executable,
               "-m", "mlx_distill.testing.distributed_check", *args]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _single(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mlx_distill.testing.distributed_check", *args], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("task"), train=40, validation=8, test=4)


def test_shard_is_disjoint_and_complete():
    items = list(range(11))
    shards = [distributed.shard(items, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == items
    assert all(len(s) in (3, 4) for s in shards)
    assert distributed.part_path("/r/rationales.jsonl", 1, 2) == Path("/r/rationales.rank1-of-2.jsonl")
    with pytest.raises(ValueError):
        distributed.shard(items, 2, 2)


def test_not_launched_is_one_rank_and_collectives_are_identities():
    assert (distributed.rank(), distributed.size()) == (0, 1)
    assert distributed.all_sum([2, 3.5]) == [2.0, 3.5]
    assert distributed.gather_json({"a": 1}) == [{"a": 1}]


@pytest.mark.slow
def test_two_rank_teacher_merges_every_example_once(task, tmp_path):
    from mlx_distill.testing.tiny_llm import build_tiny_llm

    llm = build_tiny_llm(tmp_path / "llm", arch="llama")
    common = ["--model", str(llm), "--data", str(task), "--max-tokens", "10", "--batch-size", "4"]
    _single("teacher", *common, "--out", str(tmp_path / "one" / "r.jsonl"), "--result", str(tmp_path / "one.json"))
    reference = {r["id"]: r for r in _records(tmp_path / "one" / "r.jsonl")}

    # A resumed job: 5 examples already merged, and rank 1's part holds 3 more from a killed run.
    two = tmp_path / "two" / "r.jsonl"
    two.parent.mkdir()
    ids = list(reference)
    kept = {i: {**reference[i], "raw": f"kept {i}"} for i in ids[:5]}
    two.write_text("".join(json.dumps(r) + "\n" for r in kept.values()))
    rank1_shard = distributed.shard([i for i in ids_in_order(task) if i not in kept], 1, 2)
    assert len(ids) == len(ids_in_order(task))  # every training row asked: none held out as an exemplar
    part = distributed.part_path(two, 1, 2)
    from_part = {i: {**reference[i], "raw": f"part {i}"} for i in rank1_shard[:3]}
    part.write_text("".join(json.dumps(r) + "\n" for r in from_part.values()) + '{"id": "torn')

    _launch("teacher", *common, "--out", str(two), "--result", str(tmp_path / "two.json"))
    merged = _records(two)
    assert sorted(r["id"] for r in merged) == sorted(ids)  # every example exactly once
    by_id = {r["id"]: r for r in merged}
    assert all(by_id[i]["raw"] == f"kept {i}" for i in kept)
    assert all(by_id[i]["raw"] == f"part {i}" for i in from_part)
    fresh = [i for i in ids if i not in kept and i not in from_part]
    assert all(by_id[i]["raw"] == reference[i]["raw"] for i in fresh)  # greedy: same text as one process
    assert not part.exists() and not distributed.part_path(two, 0, 2).exists()
    summary = json.loads((tmp_path / "two.json").read_text())["summary"]
    assert (summary["done"], summary["total"]) == (len(ids), len(ids))


def ids_in_order(task: Path) -> list[str]:
    """The training rows the teacher is asked, in order (rows shown as worked exemplars are not)."""
    from mlx_distill.data import load_task
    from mlx_distill.teacher import exemplars_for

    train = load_task("jsonl", task, seed=0).train
    held_out = {e.id for e in exemplars_for("jsonl", None, train)}
    return [e.id for e in train if e.id not in held_out]


@pytest.mark.slow
def test_two_rank_training_matches_one_rank(task, tmp_path):
    student = build_model(tmp_path / "t5", dropout_rate=0.0)
    # 6 examples a batch: the ranks get 3 rows each, with different padded lengths.
    common = ["--model", str(student), "--data", str(task), "--steps", "5", "--batch-size", "6"]
    _single("train", *common, "--out", str(tmp_path / "one"), "--result", str(tmp_path / "one.json"))
    _launch("train", *common, "--out", str(tmp_path / "two"), "--result", str(tmp_path / "two.json"))
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["size"] == 2 and len(two["losses"]) == 5
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert one["losses"][-1] < one["losses"][0]
    # Only rank 0 wrote: one checkpoint folder, one exported student, weights equal to 1 rank's.
    import mlx.core as mx

    a = mx.load(str(tmp_path / "one" / "student" / "model.safetensors"))
    b = mx.load(str(tmp_path / "two" / "student" / "model.safetensors"))
    assert all(mx.allclose(a[k], b[k], atol=1e-4).item() for k in a)


@pytest.mark.slow
def test_run_with_hosts_file_on_two_loopback_ranks(task, tmp_path):
    import tomli_w

    from mlx_distill.testing.tiny_llm import build_tiny_llm

    llm = build_tiny_llm(tmp_path / "llm", arch="qwen2", seed=1)
    student = build_model(tmp_path / "t5", dropout_rate=0.0)
    hosts = tmp_path / "hosts.json"
    host = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    hosts.write_text(json.dumps({"backend": "ring", "hosts": [host, host]}))
    config = tmp_path / "run.toml"
    config.write_text(tomli_w.dumps({
        "name": "two", "runs_dir": str(tmp_path / "runs"), "task": {"name": "jsonl", "data": str(task)},
        "teacher": {"model": str(llm), "batch_size": 4, "max_tokens": 8, "filter": "all"},
        "train": {"student": str(student), "lr": 3e-3, "batch_size": 8, "max_steps": 4, "eval_every": 0,
                  "max_eval_examples": 4, "log_every": 2},
    }))
    env = {**os.environ}
    result = subprocess.run([sys.executable, "-m", "mlx_distill", "run", str(config), "--hosts", str(hosts)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "two"
    ids = [r["id"] for r in _records(run / "rationales.jsonl")]
    assert sorted(ids) == sorted(ids_in_order(task))
    events = [event_from_json(line) for line in (run / "events.jsonl").read_text().splitlines() if line]
    assert {e.rank for e in events if e.kind == "TeacherProgress"} == {0, 1}  # rank 1's relayed
    assert all(e.rank == 0 for e in events if e.kind in ("TrainStep", "StageStarted", "CheckpointSaved"))
    assert (run / "student" / "config.json").exists() and lock_holder(run / "pid") is None
    state = json.loads((run / "state.json").read_text())["stages"]
    assert all(state[s]["status"] == "done" for s in ("data", "teacher", "train", "evaluate", "export"))


def test_dashboard_sums_the_ranks_teacher_progress():
    from mlx_distill.events import StageStarted, TeacherProgress
    from mlx_distill.tui.state import DashboardState

    state = DashboardState()
    state.apply(StageStarted(stage="teacher"))
    for rank, done in ((0, 3), (1, 5), (0, 6)):
        state.apply(TeacherProgress(done=done, total=12, accepted=done - 1, parse_failures=0, generated_tokens=done,
                                    generation_tps=10.0, prompt_tps=1.0, eta_seconds=4.0, rank=rank))
    assert (state.teacher.done, state.teacher.total, state.teacher.accepted) == (11, 24, 9)
    assert "ranks: 0: 6/12 · 1: 5/12" in state.teacher_text()
