"""Scoring: the safe arithmetic evaluator refuses code, equations compare by value, labels by text."""

import json
from pathlib import Path

import pytest

from mlx_distill.metrics import accuracy, is_correct, normalize_label, safe_arithmetic

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SVAMP_FILE = SHARED_DATA / "svamp" / "SVAMP.json"
# chal-680's Equation "( ( 4.0 - 2.0 ) + 3.0 )" is 5 but its Answer field says 1.0: an error in
# the published dataset, not in the evaluator (4 apples - 2 picked + 3 grown = 5).
SVAMP_ANSWER_ERRATA = {"chal-680"}


@pytest.mark.parametrize("expr, value", [
    ("( 76.0 - 25.0 )", 51.0),
    ("( ( 4.0 + 2.0 ) * 3.5 )", 21.0),
    ("-(2 + 3) * 1.5", -7.5),
    ("--4", 4.0),
    ("+4 - .5", 3.5),
    ("3 × 4 ÷ 2", 6.0),
    ("7 / 2", 3.5),
    ("  12  ", 12.0),
])
def test_safe_arithmetic_evaluates_plain_arithmetic(expr, value):
    assert safe_arithmetic(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr", [
    "__import__('os')",                       # import
    "__import__('os').system('echo hi')",     # call + attribute
    "(1).real",                               # attribute access
    "x + 1",                                  # names
    "abs(-3)",                                # calls
    "[1, 2][0]",                              # subscripts
    "2 ** 10",                                # powers are refused, whatever their size
    "9 ** 9 ** 9",                            # a huge power
    "7 // 2",                                 # floor division
    "7 % 2",                                  # modulo
    "1e308 * 10",                             # scientific notation is not part of the grammar
    "lambda: 1",
    "'1' + '2'",
    "1 2",
    "(1 + 2",
    "1 + 2)",
    "",
    "1 +" * 300 + "1",                        # too long
    "(" * 100 + "1" + ")" * 100,              # nesting bomb
])
def test_safe_arithmetic_refuses_everything_else(expr):
    with pytest.raises(ValueError):
        safe_arithmetic(expr)


def test_safe_arithmetic_refuses_division_by_zero_and_overflow():
    with pytest.raises(ValueError, match="division by zero"):
        safe_arithmetic("( 3.0 / ( 2.0 - 2.0 ) )")
    with pytest.raises(ValueError):
        safe_arithmetic("9" * 200 + " * " + "9" * 200)  # beyond float range


def test_safe_arithmetic_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ValueError):
        safe_arithmetic(f"__import__('pathlib').Path('{marker}').touch()")
    assert not marker.exists()


def test_svamp_correctness_is_numeric_equality():
    assert is_correct("svamp", "( 76.0 - 25.0 )", "( 76.0 - 25.0 )")
    assert is_correct("svamp", "(76-25)", "( 76.0 - 25.0 )")
    assert is_correct("svamp", "( 25.0 + 26.0 )", "( 76.0 - 25.0 )")  # same value, other equation
    assert is_correct("svamp", "( 1.0 / 3.0 )", "0.33333")  # within the 1e-4 tolerance
    assert not is_correct("svamp", "( 76.0 + 25.0 )", "( 76.0 - 25.0 )")
    assert not is_correct("svamp", "( 1.0 / 0.0 )", "( 1.0 / 0.0 )")  # division by zero is wrong
    assert not is_correct("svamp", "__import__('os')", "( 1.0 )")
    assert not is_correct("svamp", "", "( 1.0 )")


def test_text_and_nli_labels_match_after_normalization():
    assert is_correct("cqa", "  House. ", "house")
    assert is_correct("cqa", "antique  shop", "antique shop")
    assert not is_correct("cqa", "a house", "house")
    assert is_correct("esnli", "Entailment.", "entailment")
    assert not is_correct("anli", "neutral", "contradiction")
    assert normalize_label("jsonl", " Fish.. ") == "fish"
    assert normalize_label("svamp", "( 1.0 + 2.0 )") == "(1.0+2.0)"


def test_accuracy():
    assert accuracy("cqa", ["house", "shop", "Bank."], ["house", "store", "bank"]) == pytest.approx(2 / 3)
    assert accuracy("svamp", [], []) == 0.0
    with pytest.raises(ValueError):
        accuracy("cqa", ["a"], ["a", "b"])


@pytest.mark.skipif(not SVAMP_FILE.is_file(), reason="shared/data/svamp is not beside this checkout")
def test_svamp_gold_equations_evaluate_to_the_dataset_answers():
    records = json.loads(SVAMP_FILE.read_text())
    assert len(records) == 1000
    mismatched = set()
    for record in records:
        value = safe_arithmetic(record["Equation"])
        if not abs(value - record["Answer"]) <= 1e-4 * max(1.0, abs(record["Answer"])):
            mismatched.add(record["ID"])
    assert mismatched == SVAMP_ANSWER_ERRATA
