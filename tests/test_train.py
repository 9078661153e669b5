"""Trainer internals on a tiny T5: the loss against a numpy computation, alpha=1 vs finetune,
micro-batching, resume equivalence with dropout on, rows per method."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_distill.train.batches import (
    BatchOrder,
    DataPosition,
    build_texts,
    make_micro_batch,
    split_micro_batches,
    tokenize_rows,
)
from mlx_distill.train.checkpoint import latest_checkpoint, read_checkpoint_state
from mlx_distill.data import Example, RationaleRecord, load_task
from mlx_distill.errors import DistillError
from mlx_distill.methods import parse_cot_answer
from mlx_distill.events import Log, TrainStep
from mlx_distill.student import load_student
from mlx_distill.train import TrainConfig, evaluate, train
from mlx_distill.train.step import make_loss


def _no_eval(small_synthetic_task: Path):
    data = load_task("jsonl", small_synthetic_task)
    return dataclasses.replace(data, validation=[], test=[])


def _numpy_mean_ce(logits: np.ndarray, targets: list[np.ndarray]) -> tuple[float, int]:
    """Summed cross-entropy of each row's real targets, from the logits, and the token count."""
    total, count = 0.0, 0
    for row, target in enumerate(targets):
        if target is None:
            continue
        z = logits[row, : len(target)].astype(np.float64)
        log_probs = z - z.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        total -= log_probs[np.arange(len(target)), target].sum()
        count += len(target)
    return total, count


def test_loss_is_the_alpha_weighted_sum_of_token_means(tiny_student, small_synthetic_task):
    model, tokenizer = load_student(tiny_student)
    model.eval()  # no dropout: the two computations must see the same network
    examples = load_task("jsonl", small_synthetic_task).train[:4]
    # The third example has no rationale: it must count in the label loss only.
    examples[2] = dataclasses.replace(examples[2], rationale=None)
    texts, stats = build_texts(examples, "step-by-step", use_human_rationales=True)
    assert stats.with_rationale == 3
    rows = tokenize_rows(tokenizer, texts, max_input_tokens=64, max_target_tokens=64)
    batch = make_micro_batch(rows, [0, 1, 2, 3], pad_id=0, decoder_start_id=0)

    expected = {}
    # The explain: arrays hold only the rows that have a rationale, in batch order.
    covered = [r for r in rows.rationale if r is not None]
    for name, inputs, targets in (("label", rows.predict, rows.target), ("rationale", rows.explain, covered)):
        arrays = getattr(batch, name)
        logits = np.array(model(mx.array(arrays.input_ids), mx.array(arrays.decoder_input_ids),
                                mx.array(arrays.attention_mask)))
        expected[name] = _numpy_mean_ce(logits, targets)
    assert expected["rationale"][1] == sum(len(r) for r in rows.rationale if r is not None)

    alpha = 0.3
    loss, label_sum, rationale_sum = make_loss(alpha)(
        model,
        tuple(mx.array(a) for a in batch.label.as_tuple()),
        tuple(mx.array(a) for a in batch.rationale.as_tuple()),
        mx.array(float(batch.label_tokens)),
        mx.array(float(batch.rationale_tokens)),
    )
    label_mean = expected["label"][0] / expected["label"][1]
    rationale_mean = expected["rationale"][0] / expected["rationale"][1]
    assert label_sum.item() == pytest.approx(expected["label"][0], rel=1e-5)
    assert rationale_sum.item() == pytest.approx(expected["rationale"][0], rel=1e-5)
    assert loss.item() == pytest.approx(alpha * label_mean + (1 - alpha) * rationale_mean, rel=1e-5)


def _weights(out_dir: Path) -> dict[str, np.ndarray]:
    folder = latest_checkpoint(out_dir / "checkpoints")
    return {k: np.array(v) for k, v in mx.load(str(folder / "model.safetensors")).items()}


def _run(tiny_student, data, out_dir, **overrides):
    settings = dict(lr=1e-3, batch_size=8, max_steps=6, log_every=1, eval_every=0, warmup_steps=2)
    settings.update(overrides)
    losses = []

    def on_event(event):
        if isinstance(event, TrainStep):
            losses.append(event.loss)

    result = train(tiny_student, data, None, TrainConfig(**settings), out_dir, on_event=on_event)
    return result, losses


def test_alpha_one_equals_finetune(tiny_student, small_synthetic_task, tmp_path):
    data = _no_eval(small_synthetic_task)
    sbs, sbs_losses = _run(tiny_student, data, tmp_path / "sbs", method="step-by-step", alpha=1.0)
    ft, ft_losses = _run(tiny_student, data, tmp_path / "ft", method="finetune")
    assert sbs_losses == ft_losses
    a, b = _weights(tmp_path / "sbs"), _weights(tmp_path / "ft")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # And alpha < 1 really trains something else.
    other, other_losses = _run(tiny_student, data, tmp_path / "half", method="step-by-step", alpha=0.5)
    assert other_losses != ft_losses


def test_micro_batches_give_the_same_step_as_one_batch(tiny_student_without_dropout, small_synthetic_task, tmp_path):
    # Without dropout (micro-batches draw other dropout masks) the split step is the same step.
    data = _no_eval(small_synthetic_task)
    whole, whole_losses = _run(tiny_student_without_dropout, data, tmp_path / "whole", max_steps=3)
    split, split_losses = _run(tiny_student_without_dropout, data, tmp_path / "split", max_steps=3, max_tokens_per_batch=300)
    assert len(list((tmp_path / "split").glob("checkpoints/step-*"))) == 1
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-5)


def test_one_row_over_the_token_cap_is_a_clear_error(tiny_student, small_synthetic_task):
    _, tokenizer = load_student(tiny_student)
    texts, _ = build_texts(load_task("jsonl", small_synthetic_task).train[:2], "finetune")
    rows = tokenize_rows(tokenizer, texts, max_input_tokens=64, max_target_tokens=64)
    pieces = split_micro_batches(rows, np.array([0, 1]), pad_id=0, decoder_start_id=0, max_tokens=40)
    assert [len(p.label.input_ids) for p in pieces] == [1, 1]
    with pytest.raises(DistillError, match="max_tokens_per_batch=10"):
        split_micro_batches(rows, np.array([0, 1]), pad_id=0, decoder_start_id=0, max_tokens=10)


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_student, small_synthetic_task, tmp_path):
    data = _no_eval(small_synthetic_task)
    steps = 8
    straight, straight_losses = _run(tiny_student, data, tmp_path / "straight", max_steps=steps, save_every=2)

    seen = []

    def stop_half_way() -> bool:
        return len(seen) >= steps // 2

    config = TrainConfig(lr=1e-3, batch_size=8, max_steps=steps, log_every=1, eval_every=0, warmup_steps=2, save_every=2)
    first = train(tiny_student, data, None, config, tmp_path / "resumed",
                  on_event=lambda e: seen.append(e.loss) if isinstance(e, TrainStep) else None,
                  should_stop=stop_half_way)
    assert first.stopped and first.steps == steps // 2 and "resume" in first.resume_hint
    assert read_checkpoint_state(latest_checkpoint(tmp_path / "resumed" / "checkpoints")).step == steps // 2
    with pytest.raises(DistillError, match="--resume"):
        train(tiny_student, data, None, config, tmp_path / "resumed")
    rest = []
    second = train(tiny_student, data, None, config, tmp_path / "resumed", resume=True,
                   on_event=lambda e: rest.append(e.loss) if isinstance(e, TrainStep) else None)
    assert second.steps == steps and not second.stopped
    assert abs(second.final_loss - straight.final_loss) < 1e-5
    np.testing.assert_allclose(seen + rest, straight_losses, rtol=0, atol=1e-5)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    assert load_student(tiny_student)[0].args.dropout_rate > 0  # dropout was on in these runs


def test_resume_refuses_other_settings(tiny_student, small_synthetic_task, tmp_path):
    data = _no_eval(small_synthetic_task)
    _run(tiny_student, data, tmp_path / "run", max_steps=2)
    with pytest.raises(DistillError, match="lr: 0.001 -> 0.002"):
        train(tiny_student, data, None, TrainConfig(lr=2e-3, batch_size=8, max_steps=2, eval_every=0, warmup_steps=2),
              tmp_path / "run", resume=True)


def test_rows_per_method_and_label_sources():
    examples = [
        Example("a", "q1", "yes", rationale="human a"),
        Example("b", "q2", "no"),
        Example("c", "q3", "no"),
    ]
    records = {
        "a": RationaleRecord("a", "teacher a", "yes", accepted=True),
        "b": RationaleRecord("b", "teacher b", "yes", accepted=False, agrees=False),
    }
    rows, stats = build_texts(examples, "step-by-step", rationales=records)
    assert [(r.target, r.rationale) for r in rows] == [("yes", "teacher a"), ("no", None), ("no", None)]
    rows, stats = build_texts(examples, "step-by-step", rationales=records, label_source="teacher",
                              label_fallback="gold")
    assert [r.target for r in rows] == ["yes", "yes", "no"] and stats.gold_fallbacks == 1
    rows, _ = build_texts(examples, "distill", rationales=records)
    assert [(r.target, r.rationale) for r in rows] == [("yes", None), ("yes", None)]  # c: no teacher answer
    rows, _ = build_texts(examples, "cot", rationales=records)
    assert rows[0].target == "teacher a So the answer is yes" and rows[1].target == "So the answer is no"
    assert parse_cot_answer(rows[0].target) == "yes"
    assert parse_cot_answer("x. So the answer is (12 + 3).") == "(12 + 3)"
    rows, _ = build_texts(examples, "step-by-step", use_human_rationales=True)
    assert [r.rationale for r in rows] == ["human a", None, None]
    with pytest.raises(DistillError, match="--rationales FILE or --human-rationales"):
        build_texts(examples, "step-by-step")


def test_batch_order_is_seeded_and_resumable():
    order = BatchOrder(lengths=[5, 1, 9, 3, 7, 2, 8], batch_size=3, seed=4)
    position, seen = DataPosition(), []
    for _ in range(len(order) * 2):
        batch, position = order.take(position)
        assert len(batch) == 3
        seen.append(tuple(batch))
    assert position == DataPosition(epoch=2, batch=0)
    again = BatchOrder(lengths=[5, 1, 9, 3, 7, 2, 8], batch_size=3, seed=4)
    assert tuple(again.take(DataPosition(1, 1))[0]) == seen[len(order) + 1]
    assert set(np.concatenate([np.array(b) for b in seen[: len(order)]])) == set(range(7))


def test_cot_in_bfloat16_trains_and_scores_answers_after_the_phrase(tiny_student, small_synthetic_task, tmp_path):
    data = load_task("jsonl", small_synthetic_task)
    data = dataclasses.replace(data, validation=data.validation[:4], test=data.test[:4])
    result, losses = _run(tiny_student, data, tmp_path / "cot", method="cot", dtype="bfloat16", max_steps=2,
                          max_target_tokens=32)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert result.best_validation_accuracy is not None
    meta = (tmp_path / "cot" / "student" / "mlx_distill.json").read_text()
    assert '"method": "cot"' in meta
    assert not (tmp_path / "cot" / "predictions_test.jsonl").exists()  # training never scores the test split
    for line in (tmp_path / "cot" / "predictions_validation.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["prediction"] == parse_cot_answer(record["generated"])


def test_a_non_finite_loss_stops_training_and_exports_nothing(tiny_student, small_synthetic_task, tmp_path):
    # A student whose weights already hold an inf: the first step's loss is not finite. Training
    # must stop there, name the fix, keep no checkpoint of the bad update and export no student.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_student, broken)
    weights = mx.load(str(broken / "model.safetensors"))
    name = next(k for k in weights if k.endswith("wo.weight"))
    weights[name] = mx.full(weights[name].shape, float("inf"), dtype=weights[name].dtype)
    mx.save_safetensors(str(broken / "model.safetensors"), weights)
    data = _no_eval(small_synthetic_task)
    with pytest.raises(DistillError) as error:
        _run(broken, data, tmp_path / "out", save_every=1)
    message = str(error.value)
    assert "diverged at step 1" in message and "--lr" in message and "no checkpoint" in message
    assert latest_checkpoint(tmp_path / "out" / "checkpoints") is None
    assert not (tmp_path / "out" / "student").exists()


def test_evaluate_cuts_a_long_question_and_says_so_once(tiny_student, small_synthetic_task):
    model, tokenizer = load_student(tiny_student)
    examples = load_task("jsonl", small_synthetic_task).test[:3]
    examples = [dataclasses.replace(examples[0], input="the cat " * 5000), *examples[1:]]
    events = []
    summary = evaluate(model, tokenizer, "jsonl", examples, batch_size=2, max_tokens=4, max_input_tokens=64,
                       split="test", on_event=events.append)
    assert summary.total == 3 and summary.truncated == 1
    warnings = [e for e in events if isinstance(e, Log)]
    assert [w.message for w in warnings] == ["1 of 3 test questions were longer than 64 tokens and were cut to that length"]
