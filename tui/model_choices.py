"""Model choices for the New run pickers: the GGUF models already on this Mac (Ollama, LM Studio)
and the catalog's teachers and students, flagged with whether each fits this machine, whether it
is already downloaded (``mlx_distill.catalog``) and, for a GGUF, whether it is supported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mlx_distill.catalog import is_downloaded
from mlx_distill.catalog import load_catalog, teacher_memory_bytes, usable_memory_bytes
from mlx_distill.errors import DistillError
from mlx_distill.platform import format_bytes, is_apple_gpu
from mlx_distill.teacher import LocalGGUF, local_gguf_models


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
    problem: str = ""  # why it cannot be used ("" when it can): an unsupported GGUF

    @property
    def label(self) -> str:
        local = self.name.startswith(("ollama:", "lmstudio:"))
        parts = [self.name if local else self.name.rsplit("/", 1)[-1]]
        if self.params:
            parts.append(self.params)
        if self.memory_bytes:
            parts.append(f"needs {format_bytes(self.memory_bytes)}")
        parts.append("fits" if self.fits else "TOO BIG")
        if self.problem:
            parts.append("NOT SUPPORTED")
        elif self.downloaded:
            parts.append("on this Mac" if local else "downloaded")
        return " · ".join(parts)


def _params(billions: float) -> str:
    return f"{billions:.3g}B" if billions >= 1 else f"{billions * 1000:.0f}M"


def _local_choice(model: LocalGGUF, available: int, apple_gpu: bool) -> ModelChoice:
    need = teacher_memory_bytes(model.weights, model.size, apple_gpu) if model.header else None
    note = f"{model.architecture} {model.quant} GGUF" if model.header else ""
    return ModelChoice(name=model.name, role="teacher", memory_bytes=need, params=_params(model.weights / 1e9),
                       note=note, fits=need is not None and need <= available, downloaded=True,
                       problem=model.problem)


def load_choices(available_bytes: int | None = None, downloaded: Callable[[str], bool] = is_downloaded,
                 local: Callable[[], list[LocalGGUF]] = local_gguf_models) -> list[ModelChoice]:
    """The GGUF models on this Mac first, then the catalog's models, with fits/downloaded flags.

    ``available_bytes``: the memory to fit into (default: what ``mlx-distill models`` uses).
    """
    available = usable_memory_bytes() if available_bytes is None else available_bytes
    apple_gpu = is_apple_gpu()
    choices = [_local_choice(model, available, apple_gpu) for model in local()]
    try:
        catalog = load_catalog()
    except DistillError:
        return choices
    for model in (*catalog.teachers, *catalog.students):
        need = model.runtime_memory_bytes(apple_gpu=apple_gpu)
        choices.append(ModelChoice(name=model.id, role=model.kind, memory_bytes=need,
                                   params=_params(model.params_billion),
                                   note=model.note, fits=need <= available, downloaded=downloaded(model.id)))
    return choices


def find_choice(choices: Iterable[ModelChoice], name: str) -> ModelChoice | None:
    return next((choice for choice in choices if choice.name == name), None)
