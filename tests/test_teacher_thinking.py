"""Thinking models: the chat template is rendered with thinking off where it takes the switch, and a
<think>...</think> block is stripped before parsing and counted."""

from __future__ import annotations

import json

import pytest

from mlx_distill.teacher import generate_rationales, load_prompt, parse_output, render_prompt
from mlx_distill.teacher.parse import strip_thinking

QWEN3_LIKE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n"
              "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
              "{% endif %}")


@pytest.mark.parametrize("raw, thinking", [
    ("<think>Bats fly, but they nurse.</think>\nBats are mammals. So the answer is (b).", True),
    ("<think>\n\n</think>\n\nBats are mammals. So the answer is (b).", True),
    ("Bats fly.</think>Bats are mammals. So the answer is (b).", True),  # the template opened <think>
    ("Bats are mammals. So the answer is (b).", False),
])
def test_thinking_is_stripped_before_parsing_and_flagged(raw, thinking):
    parsed = parse_output("cqa", raw, ("bird", "mammal", "fish"))
    assert parsed.parse_ok and parsed.answer == "mammal" and parsed.thinking is thinking
    assert "think" not in parsed.rationale and "nurse" not in parsed.rationale


def test_thinking_cut_off_by_the_token_budget_leaves_no_answer():
    parsed = parse_output("cqa", "<think>Bats fly, so maybe (a)... the answer is (a", ("bird", "mammal"))
    assert not parsed.parse_ok and parsed.thinking and parsed.rationale == ""
    assert strip_thinking("no thinking here") == ("no thinking here", False)


def test_the_template_is_rendered_with_thinking_off(tmp_path):
    from transformers import AutoTokenizer

    from mlx_distill.testing.gguf_models import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "m.gguf", "qwen3", "F16", head_dim=128)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=gguf.name)
    tokenizer.chat_template = QWEN3_LIKE
    ids = render_prompt(tokenizer, load_prompt("cqa"), "cqa", "Is a bat a bird?\nAnswer Choices:\n(a) yes\n(b) no")
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_the_summary_counts_the_answers_that_thought(tmp_path, demo_models):
    from mlx_distill.data import load_task
    from mlx_distill.commands.demo import demo_data_dir

    examples = load_task("jsonl", demo_data_dir()).train[20:24]
    out = tmp_path / "r.jsonl"
    # A finished file (as a thinking teacher left it): the summary counts its thinking records.
    first = generate_rationales(examples, "jsonl", str(demo_models["teacher"]), out, max_tokens=4)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert first.thinking == 0 and all(r["thinking"] is False for r in records)
    records[0]["thinking"] = records[2]["thinking"] = True
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = generate_rationales(examples, "jsonl", str(demo_models["teacher"]), out, max_tokens=4)
    assert again.skipped == 4 and again.thinking == 2
