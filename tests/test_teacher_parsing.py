"""Parsing teacher outputs and building prompts (no model needed)."""

from __future__ import annotations

import pytest

from mlx_distill.errors import DistillError
from mlx_distill.teacher import (
    build_completion,
    build_messages,
    build_query,
    cut_at_stop,
    load_prompt,
    parse_output,
    parse_prompt_text,
)

CQA_CHOICES = ("bank", "library", "canada", "zoo", "river")


@pytest.mark.parametrize(
    "raw, rationale, answer",
    [
        # Clean, as the exemplars show it.
        ("The answer must be a place where beavers live. Of the above choices, only Canada has beavers. "
         "So the answer is (c) canada.", "The answer must be a place where beavers live. Of the above "
         "choices, only Canada has beavers.", "canada"),
        # The paper's PaLM run-on: the next invented exemplar must be cut off.
        ("Beavers build dams in rivers. So the answer is (e) river.\n\nQ: What is the best way to get rid "
         "of a headache?\nAnswer Choices:\n(a) bank\nSo the answer is (a) bank.", "Beavers build dams in rivers.",
         "river"),
        # Letter only, upper case.
        ("Books are kept in a library. So the answer is (B).", "Books are kept in a library.", "library"),
        # Text only, no letter.
        ("Animals are kept in a zoo. Therefore, the answer is zoo.", "Animals are kept in a zoo.", "zoo"),
        # Markdown bold around the answer.
        ("Money is kept in a bank. So the answer is **(a) bank**.", "Money is kept in a bank.", "bank"),
    ],
)
def test_cqa_outputs(raw, rationale, answer):
    parsed = parse_output("cqa", raw, CQA_CHOICES)
    assert parsed.parse_ok
    assert parsed.rationale == rationale
    assert parsed.answer == answer


@pytest.mark.parametrize(
    "raw",
    [
        "Beavers like water. So the answer is (z) mars.",  # letter out of range, text not a choice
        "I am not sure which one it is.",  # no answer phrase at all
        "",  # empty output
    ],
)
def test_cqa_malformed_outputs_are_recorded_not_raised(raw):
    parsed = parse_output("cqa", raw, CQA_CHOICES)
    assert not parsed.parse_ok


@pytest.mark.parametrize(
    "raw, answer",
    [
        ("Dan had 12 and gave away 5, so 12 - 5 = 7. So the answer is ( 12 - 5 ) = 7.", "( 12 - 5 )"),
        ("He sold 18 + 12 = 30, so 50 - 30 = 20 are left. So the answer is ( 50 - ( 18 + 12 ) ) = 20.\n\nQ: A "
         "farmer has 3 cows.", "( 50 - ( 18 + 12 ) )"),
        ("There are 3 shelves of 9. The answer is 27.", "27"),
        ("Each box gets 24 / 4 = 6. So the answer is 6.5.", "6.5"),
        ("Total cost is 1,250 dollars. So the answer is $1,250.", "1250"),
        ("So the answer is (76.0 - 25.0).", "(76.0 - 25.0)"),
    ],
)
def test_svamp_outputs(raw, answer):
    parsed = parse_output("svamp", raw)
    assert parsed.parse_ok
    assert parsed.answer == answer


def test_svamp_answer_is_checkable_with_metrics():
    from mlx_distill.metrics import is_correct

    parsed = parse_output("svamp", "She read 41 - 15 = 26. So the answer is ( 41 - 15 ) = 26.")
    assert is_correct("svamp", parsed.answer, "( 41.0 - 15.0 )")
    assert not is_correct("svamp", parsed.answer, "( 41.0 + 15.0 )")


def test_svamp_malformed():
    assert not parse_output("svamp", "So the answer is seven apples.").parse_ok
    assert not parse_output("svamp", "Dan has some marbles left over").parse_ok


@pytest.mark.parametrize("task", ["esnli", "anli"])
@pytest.mark.parametrize(
    "raw, label",
    [
        ("A park is outside. So the answer is entailment.", "entailment"),
        ("The premise says nothing about his job. So the answer is neutral.\n\nPremise: A dog runs.\n"
         "Hypothesis: An animal moves.\nA: So the answer is entailment.", "neutral"),
        ("One cannot sleep and run. So the answer is Contradiction", "contradiction"),
        ("The two sentences contradict each other. The answer is: it contradicts the premise.", "contradiction"),
    ],
)
def test_nli_outputs(task, raw, label):
    parsed = parse_output(task, raw)
    assert parsed.parse_ok
    assert parsed.answer == label


def test_nli_malformed():
    parsed = parse_output("esnli", "The answer is maybe.")
    assert not parsed.parse_ok
    assert parsed.answer == "maybe"


def test_generic_answer_after_phrase():
    parsed = parse_output("jsonl", "Alligators are cold-blooded and scaly. So the answer is reptile.\nQ: next")
    assert parsed.parse_ok
    assert (parsed.rationale, parsed.answer) == ("Alligators are cold-blooded and scaly.", "reptile")


def test_cut_at_stop_finds_first_marker():
    text, found = cut_at_stop("abc\nQ: x\n\nPremise: y")
    assert (text, found) == ("abc", True)
    assert cut_at_stop("plain") == ("plain", False)


@pytest.mark.parametrize("task", ["svamp", "cqa", "esnli", "anli"])
def test_builtin_prompts_parse_and_their_exemplars_parse(task):
    template = load_prompt(task)
    assert len(template.exemplars) >= 3
    for exemplar in template.exemplars:
        # Each worked answer in our own prompt must be parseable by our own parser.
        assert parse_output(task, exemplar.answer).parse_ok, exemplar.answer


def test_nli_query_from_student_input():
    template = load_prompt("esnli")
    query = build_query(template, "esnli", "Premise: A man sleeps.\nHypothesis: A man rests.")
    assert query.endswith("Premise: A man sleeps.\nHypothesis: A man rests.")
    assert "Premise: A</s>" not in build_query(template, "esnli", "A man sleeps.</s>A man rests.")
    assert "Hypothesis: A man rests." in build_query(template, "esnli", "A man sleeps.</s>A man rests.")


def test_rationalize_puts_gold_answer_in_prompt():
    template = load_prompt("svamp")
    query = build_query(template, "svamp", "Tom has 3 pens and buys 2.", "( 3 + 2 )", rationalize=True)
    assert "( 3 + 2 )" in query
    assert "( 3 + 2 )" not in build_query(template, "svamp", "Tom has 3 pens and buys 2.", "( 3 + 2 )")


def test_messages_and_completion_layout():
    template = load_prompt("cqa")
    messages = build_messages(template, "Q: x?")
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(template.exemplars) + ["user"]
    assert messages[0]["content"].startswith(template.instruction)
    assert messages[-1]["content"] == "Q: x?"
    completion = build_completion(template, "Q: x?")
    assert completion.endswith("Q: x?\nA:")
    assert completion.count("\nA: ") == len(template.exemplars)


def test_user_prompt_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Classify the animal.\n---\nQ: a cat\nA: Cats have fur. So the answer is mammal.\n---\n"
                    "Q: {input}\nHint: {answer}\nA:\n")
    template = load_prompt("jsonl", path)
    assert len(template.exemplars) == 1
    assert build_query(template, "jsonl", "a trout", "fish") == "Q: a trout\nHint: fish"


def test_prompt_file_without_placeholder_is_an_error(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Answer the question: QUESTION\nA:")
    with pytest.raises(DistillError, match=r"bad\.txt.*\{input\}"):
        load_prompt("jsonl", path)


def test_exemplar_without_answer_is_an_error():
    with pytest.raises(DistillError, match="exemplar 1"):
        parse_prompt_text("Do it.\n---\nQ: no answer here\n---\nQ: {input}\nA:")


def test_prompt_hash_changes_with_prompt_and_rationalize():
    a, b = load_prompt("svamp"), load_prompt("cqa")
    assert a.hash() != b.hash()
    assert a.hash() != a.hash(rationalize=True)
    assert a.hash() == load_prompt("svamp").hash()


# Real SmolLM2-135M outputs on the demo task (issue #12) and the forms they take.
DEMO_INPUT = "Which kind of animal is the snake?\nAnswer Choices:\n(a) reptile\n(b) mammal\n(c) bird"


def test_choices_written_inside_the_input_are_found():
    from mlx_distill.teacher import choices_in_input

    assert choices_in_input(DEMO_INPUT) == ("reptile", "mammal", "bird")
    assert choices_in_input("Pick one. Answer Choices: (a) ice cream (b) tea") == ("ice cream", "tea")
    assert choices_in_input("What is (a) plus (b)?") == ()


def test_an_answer_to_choices_in_the_input_maps_to_the_choice_text():
    choices = ("reptile", "mammal", "bird")
    for raw in ("Snakes have scales. So the answer is (a) reptile.", "Snakes have scales. So the answer is (a).",
                "Snakes have scales. So the answer is reptile.", "Snakes have scales. So the answer is a."):
        assert parse_output("jsonl", raw, choices).answer == "reptile", raw
    # A letter that disagrees with the text (position bias): the text wins.
    assert parse_output("jsonl", "Snakes have scales. So the answer is (c) reptile.", choices).answer == "reptile"


def test_reasoning_after_the_answer_is_the_rationale():
    choices = ("reptile", "mammal", "bird")
    raw = ("The answer is (a) reptile.\n\nReasoning: Snakes have dry scales and are cold-blooded. "
           "Therefore, the answer is (a) reptile.")
    parsed = parse_output("jsonl", raw, choices)
    assert parsed.parse_ok and parsed.answer == "reptile"
    assert parsed.rationale == "Snakes have dry scales and are cold-blooded."
    first_line = parse_output("jsonl", "(a) reptile\n\nReasoning: Snakes lay eggs on land.", choices)
    assert (first_line.answer, first_line.rationale) == ("reptile", "Snakes lay eggs on land.")


def test_a_rationale_that_only_restates_the_answer_is_told_apart():
    from mlx_distill.teacher import restates_answer

    assert restates_answer("A cod is a fish.", "Which kind of animal is the cod?", "fish")
    assert not restates_answer("A cod has fins and gills and lives in water.", "Which kind of animal is the cod?",
                               "fish")
