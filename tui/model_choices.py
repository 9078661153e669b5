"""Model choices for the New run pickers: the catalog's teachers and students, flagged with
whether each fits this machine and whether it is already downloaded (``mlx_distill.catalog``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mlx_distill.catalog import is_downloaded
from mlx_distill.catalog import load_catalog, usable_memory_bytes
from mlx_distill.errors import DistillError
from mlx_distill.platform import format_bytes, is_apple_gpu


@dataclass(frozen=True)
class ModelChoice:
    """One pickable model."""

    name: str  # hub id or local path: what goes into the config
    role: str  # teacher | student
    memory_bytes: int | None = None  # memory its stage needs on this machine (None: unknown)
    params: str = ""
    note: str = ""
    fits: bool = True
    downloaded: bool = False

    @property
    def label(self) -> str:
        parts = [self.name.rsplit("/", 1)[-1]]
        if self.params:
            parts.append(self.params)
        if self.memory_bytes:
            parts.append(f"needs {format_bytes(self.memory_bytes)}")
        parts.append("fits" if self.fits else "TOO BIG")
        if self.downloaded:
            parts.append("downloaded")
        return " · ".join(parts)


def load_choices(available_bytes: int | None = None,
                 downloaded: Callable[[str], bool] = is_downloaded) -> list[ModelChoice]:
    """The catalog's models with fits/downloaded flags; ``[]`` when the catalog cannot be read.

    ``available_bytes``: the memory to fit into (default: what ``mlx-distill models`` uses).
    """
    try:
        catalog = load_catalog()
    except DistillError:
        return []
    available = usable_memory_bytes() if available_bytes is None else available_bytes
    apple_gpu = is_apple_gpu()
    choices = []
    for model in (*catalog.teachers, *catalog.students):
        need = model.runtime_memory_bytes(apple_gpu=apple_gpu)
        params = f"{model.params_billion:g}B" if model.params_billion >= 1 else f"{model.params_billion * 1000:.0f}M"
        choices.append(ModelChoice(name=model.id, role=model.kind, memory_bytes=need, params=params,
                                   note=model.note, fits=need <= available, downloaded=downloaded(model.id)))
    return choices


def find_choice(choices: Iterable[ModelChoice], name: str) -> ModelChoice | None:
    return next((choice for choice in choices if choice.name == name), None)
