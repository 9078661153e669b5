"""Training checkpoints: weights, optimizer state, RNG and data position, written atomically.

Layout under ``<out>/checkpoints``::

    step-00000200/   model.safetensors, optimizer.safetensors, state.json (step, data position, best)
    latest.json      {"dir": "step-00000200", "step": 200}   (replaced atomically)
    best-00000150/   model.safetensors, state.json            (weights with the best validation accuracy)
    best.json        {"dir": "best-00000150", "step": 150}

A folder is written under a temporary name and renamed, then the pointer file is replaced with
``os.replace``; older folders are removed only after that, so a kill at any moment leaves a
complete checkpoint that the pointer names. The random stream needs no file of its own: the
trainer seeds dropout from (seed, step), and the data order from (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from mlx_distill.errors import DistillError
from mlx_distill.files import publish_dir, write_json_atomic
from mlx_distill.student import save_safetensors


@dataclass
class RunState:
    """What changes during a run (the config does not): step, data position, best so far."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # next batch index inside the epoch
    best_accuracy: float | None = None
    best_step: int | None = None
    trained_tokens: int = 0
    train_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _write_dir(root: Path, name: str, files: dict[str, dict[str, mx.array]], state: RunState) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        for filename, arrays in files.items():
            save_safetensors(tmp / filename, arrays)
        write_json_atomic(tmp / "state.json", state.to_dict())
        final = root / name
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _prune(root: Path, prefix: str, keep: str) -> None:
    for path in root.glob(f"{prefix}-*"):
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(f".{prefix}-*"):  # temp folders of a killed write
        shutil.rmtree(path, ignore_errors=True)


def model_arrays(model: Any) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def save_checkpoint(root: str | Path, model: Any, optimizer: Any, state: RunState) -> Path:
    """Write a resumable checkpoint for ``state.step`` and point ``latest.json`` at it.

    Returns:
        The checkpoint folder.
    """
    root = Path(root)
    optimizer_arrays = dict(tree_flatten(optimizer.state))
    name = f"step-{state.step:08d}"
    folder = _write_dir(
        root, name, {"model.safetensors": model_arrays(model), "optimizer.safetensors": optimizer_arrays}, state
    )
    write_json_atomic(root / "latest.json", {"dir": name, "step": state.step})
    _prune(root, "step", keep=name)
    return folder


def save_best(root: str | Path, model: Any, state: RunState) -> Path:
    """Keep the current weights as the best so far (``best.json`` points at them)."""
    root = Path(root)
    name = f"best-{state.step:08d}"
    folder = _write_dir(root, name, {"model.safetensors": model_arrays(model)}, state)
    write_json_atomic(root / "best.json", {"dir": name, "step": state.step})
    _prune(root, "best", keep=name)
    return folder


def _pointed(root: Path, pointer: str) -> Path | None:
    path = root / pointer
    if not path.exists():
        return None
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["dir"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DistillError(f"{path} is damaged ({error}); delete it to start the run again") from error
    folder = root / name
    if not (folder / "state.json").exists():
        raise DistillError(f"{path} names {folder}, which is missing; delete {root} to start again")
    return folder


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``latest.json`` points at, or None when there is no checkpoint."""
    return _pointed(Path(root), "latest.json")


def best_checkpoint(root: str | Path) -> Path | None:
    return _pointed(Path(root), "best.json")


def read_checkpoint_state(folder: str | Path) -> RunState:
    return RunState.from_dict(json.loads((Path(folder) / "state.json").read_text(encoding="utf-8")))


def load_weights(model: Any, folder: str | Path) -> None:
    """Load a checkpoint's weights into ``model`` (all parameters must match)."""
    model.load_weights(str(Path(folder) / "model.safetensors"), strict=True)
    mx.eval(model.parameters())


def restore_checkpoint(folder: str | Path, model: Any, optimizer: Any) -> RunState:
    """Put the weights and optimizer state of a checkpoint back; return its run state.

    Call it before the compiled step is built: the optimizer's state dict is replaced.
    """
    folder = Path(folder)
    load_weights(model, folder)
    arrays = mx.load(str(folder / "optimizer.safetensors"))
    optimizer.state = tree_unflatten(list(arrays.items()))
    mx.eval(optimizer.state)
    return read_checkpoint_state(folder)
