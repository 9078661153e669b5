"""Scoring predictions: numeric equality for equations, label match for text and NLI tasks.

Equations are model output, so they are untrusted text: ``safe_arithmetic`` parses them with
``ast`` and walks a whitelist (numbers, + - * /, parentheses, unary signs). Nothing is executed.
The paper's code calls ``eval()`` on model output; this module never does.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Sequence

import numpy as np

NUMERIC_TASKS = ("svamp",)
MAX_EXPRESSION_CHARS = 512
MAX_NESTING = 64
_ALLOWED_CHARS = re.compile(r"[0-9.+\-*/() \t\n]*")
_TRANSLATE = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-"})
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_NUMERIC_REL_TOL = 1e-4
_NUMERIC_ABS_TOL = 1e-4


def safe_arithmetic(expr: str) -> float:
    """Evaluate an arithmetic expression without executing anything.

    Accepts numbers (with decimals), ``+ - * /`` (also ``×`` and ``÷``), parentheses and unary
    minus/plus. Everything else (names, calls, attribute access, subscripts, ``**``, ``//``,
    ``%``, strings, very long or deeply nested input) is refused.

    Args:
        expr: The expression, e.g. ``"( 76.0 - 25.0 )"``.

    Returns:
        The value as a finite float.

    Raises:
        ValueError: The text is not such an expression, divides by zero, or its value is not finite.
    """
    if not isinstance(expr, str):
        raise ValueError(f"expected a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    text = expr.translate(_TRANSLATE).strip()
    if not text:
        raise ValueError("empty expression")
    if not _ALLOWED_CHARS.fullmatch(text):
        raise ValueError(f"not arithmetic: {expr[:60]!r}")
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth > MAX_NESTING:
            raise ValueError(f"parentheses nested deeper than {MAX_NESTING}")
        if depth < 0:
            raise ValueError("unbalanced parentheses")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        raise ValueError(f"not arithmetic: {expr[:60]!r} ({type(exc).__name__})") from None
    try:
        return _evaluate(tree.body)
    except RecursionError:
        raise ValueError("expression nested too deeply") from None


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            return _finite(float(node.value))
        except OverflowError:
            raise ValueError("number too large") from None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        try:
            return _finite(_BINARY[type(node.op)](left, right))
        except OverflowError:
            raise ValueError("value too large") from None
    raise ValueError(f"not allowed in arithmetic: {type(node).__name__}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("value too large")
    return value


def normalize_label(task: str, text: str) -> str:
    """Canonical form of a label for comparison: stripped, lower case, no trailing period.

    Inner whitespace runs become one space. For numeric tasks (``svamp``) the equation's
    whitespace is removed instead, so ``( 1 + 2 )`` and ``(1+2)`` normalize the same.
    """
    text = " ".join(str(text).split()).lower()
    while text.endswith("."):
        text = text[:-1].rstrip()
    if task in NUMERIC_TASKS:
        text = text.replace(" ", "")
    return text


def is_correct(task: str, prediction: str, gold: str) -> bool:
    """Whether a predicted label counts as correct for ``task``.

    ``svamp``: both sides are evaluated with ``safe_arithmetic`` and compared numerically
    (relative or absolute tolerance 1e-4); anything that does not evaluate is wrong.
    Other tasks (text labels, NLI words): equal after ``normalize_label``.
    """
    if task in NUMERIC_TASKS:
        try:
            predicted, expected = safe_arithmetic(prediction), safe_arithmetic(gold)
        except ValueError:
            return False
        return math.isclose(predicted, expected, rel_tol=_NUMERIC_REL_TOL, abs_tol=_NUMERIC_ABS_TOL)
    return normalize_label(task, prediction) == normalize_label(task, gold)


def accuracy(task: str, predictions: Sequence[str], golds: Sequence[str]) -> float:
    """Share of predictions that are correct (0.0 for no examples).

    Raises:
        ValueError: The two sequences differ in length.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold labels")
    if not golds:
        return 0.0
    return sum(is_correct(task, p, g) for p, g in zip(predictions, golds)) / len(golds)


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], *, samples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """The accuracy difference ``a - b`` of two systems scored on the same questions, and its
    paired-bootstrap interval.

    Questions are resampled with replacement (the same draw for both systems, so what they share
    cancels out); the interval holds the central ``level`` share of the resampled differences.

    Args:
        a, b: per-question correctness, in the same question order.
        samples: bootstrap resamples. Default: ``10_000``.
        seed: the resampling seed (the same inputs always give the same interval).
        level: the interval's coverage. Default: ``0.95``.

    Returns:
        ``(difference, low, high)`` as fractions (0.05 is 5 points).

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} answers against {len(b)}: a paired comparison needs the same questions")
    if not a:
        raise ValueError("no questions to compare")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)
