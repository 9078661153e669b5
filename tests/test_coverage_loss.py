"""The rationale term with partial coverage (#18): a rationale row weighs what it would if every
row had one, so a few rationales do not take the whole (1 - alpha) share of the loss; and
rationales that only restate the answer stay out of explain: unless asked."""

from __future__ import annotations

import dataclasses

import pytest

from mlx_distill.data import Example, RationaleRecord, load_task
from mlx_distill.metrics import paired_bootstrap
from mlx_distill.student import load_student
from mlx_distill.train import TrainConfig, evaluate, train
from mlx_distill.train.batches import build_texts
from mlx_distill.train.step import rationale_normaliser


def test_a_rationale_row_weighs_the_same_whatever_the_coverage():
    rows, length = 32, 20
    # k rows of the batch have a rationale of `length` tokens: the normaliser is what a batch with a
    # rationale on every row would have, so each row's share of the term is 1/32 for every k.
    for covered in (1, 2, 5, 32):
        assert rationale_normaliser(covered * length, covered, rows) == rows * length
    # Full coverage: the paper's token mean, whatever the lengths.
    assert rationale_normaliser(517, 32, 32) == 517


def test_restating_rationales_are_left_out_of_explain_unless_kept():
    examples = [Example("a", "Is a cod a fish?", "yes"), Example("b", "Is a bat a bird?", "no")]
    records = {"a": RationaleRecord("a", "A cod is a fish.", "yes", restates_answer=True),
               "b": RationaleRecord("b", "Bats have fur and give milk, so they are mammals.", "no")}
    rows, stats = build_texts(examples, "step-by-step", rationales=records)
    assert [(r.target, r.rationale) for r in rows] == [("yes", None), ("no", records["b"].rationale)]
    assert (stats.with_rationale, stats.restating_dropped) == (1, 1)
    rows, stats = build_texts(examples, "step-by-step", rationales=records, keep_restating=True)
    assert [r.rationale for r in rows] == ["A cod is a fish.", records["b"].rationale]
    assert stats.restating_dropped == 0


def _test_answers(student, data, config, out_dir) -> list[bool]:
    result = train(student, data, None, config, out_dir)
    model, tokenizer = load_student(result.student_dir)
    evaluate(model, tokenizer, data.task, data.test, predictions_path=out_dir / "test.jsonl")
    return [line.count('"correct": true') == 1 for line in (out_dir / "test.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_five_percent_coverage_does_not_fall_below_finetune(synthetic_task, tiny_student_without_dropout, tmp_path):
    # With the rationale mean taken over the rationale rows alone this run scored 65% against
    # finetune's 81% (interval -31..-2 points): the 12 rationales took half of every step's loss.
    data = load_task("jsonl", synthetic_task)
    covered = {e.id for e in data.train[::20]}  # 12 of 240 rows: 5%
    data = dataclasses.replace(data, train=[e if e.id in covered else dataclasses.replace(e, rationale=None)
                                            for e in data.train])
    settings = dict(human_rationales=True, lr=3e-3, batch_size=16, warmup_steps=10, max_steps=80, eval_every=0)
    step_by_step = _test_answers(tiny_student_without_dropout, data, TrainConfig(method="step-by-step", **settings),
                                 tmp_path / "sbs")
    finetune = _test_answers(tiny_student_without_dropout, data, TrainConfig(method="finetune", **settings),
                             tmp_path / "ft")
    difference, low, high = paired_bootstrap(step_by_step, finetune)
    assert high >= 0, f"step-by-step {difference * 100:+.1f} points against finetune ({low:+.2f}..{high:+.2f})"
