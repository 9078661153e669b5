"""What a trained student folder says about itself: ``mlx_distill.json`` beside its weights.

It holds the task, the method (which decides how an answer is read: a ``cot`` student's answer
follows "So the answer is") and the best validation step and accuracy. Training writes it; eval,
answering, serving and the model card read it through ``read_student_meta``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_distill.errors import DistillError
from mlx_distill.files import write_json_atomic
from mlx_distill.methods import DEFAULT_METHOD, METHODS

STUDENT_META = "mlx_distill.json"


def write_student_meta(folder: str | Path, **values: Any) -> None:
    write_json_atomic(Path(folder) / STUDENT_META, values)


def read_student_meta(folder: str | Path) -> dict[str, Any]:
    """The folder's ``mlx_distill.json`` (empty for a student that was not trained here).

    Raises:
        DistillError: the file exists but is not a JSON object.
    """
    path = Path(folder) / STUDENT_META
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DistillError(f"{path} is not readable JSON; retrain the student or delete the file") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path} is not a JSON object; retrain the student or delete the file")
    return data


def student_method(folder: str | Path) -> str:
    """The method the student was trained with (step-by-step for a student from elsewhere)."""
    method = read_student_meta(folder).get("method")
    return method if method in METHODS else DEFAULT_METHOD
