"""Model choices for the pickers: the catalog's teachers and students with fits/downloaded flags.

Uses ``mlx_distill.catalog`` when the pipeline provides it; until then it reads
``models/catalog.toml`` directly (tolerating the few layouts a catalog is likely to take).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from mlx_distill.platform import format_bytes

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

GB = 1_000_000_000


@dataclass(frozen=True)
class ModelChoice:
    """One pickable model."""

    name: str  # hub id or local path, what goes into the config
    role: str  # teacher | student
    memory_bytes: int | None = None  # memory it needs to run (None: unknown)
    params: str = ""
    note: str = ""
    fits: bool = True
    downloaded: bool = False

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.params:
            parts.append(self.params)
        if self.memory_bytes:
            parts.append(f"needs {format_bytes(self.memory_bytes)}")
        parts.append("fits" if self.fits else "TOO BIG")
        if self.downloaded:
            parts.append("downloaded")
        return " · ".join(parts)


def catalog_path() -> Path:
    """``models/catalog.toml`` next to the package (a source checkout or editable install)."""
    import mlx_distill

    return Path(mlx_distill.__file__).resolve().parents[1] / "models" / "catalog.toml"


def _entries(raw: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(role, entry) pairs from the catalog layouts we accept."""
    for role in ("teacher", "student"):
        for key in (role, role + "s"):
            section = raw.get(key)
            if isinstance(section, list):
                for entry in section:
                    if isinstance(entry, dict):
                        yield role, entry
            elif isinstance(section, dict):
                for name, entry in section.items():
                    if isinstance(entry, dict):
                        yield role, {"name": name, **entry}
    for entry in raw.get("models", []) if isinstance(raw.get("models"), list) else []:
        if isinstance(entry, dict) and entry.get("role") in ("teacher", "student"):
            yield entry["role"], entry


def _memory_bytes(entry: dict[str, Any]) -> int | None:
    for key in ("memory_bytes", "min_memory_bytes"):
        if isinstance(entry.get(key), (int, float)):
            return int(entry[key])
    for key in ("memory_gb", "min_memory_gb", "ram_gb", "memory"):
        if isinstance(entry.get(key), (int, float)):
            return int(entry[key] * GB)
    return None


def is_downloaded(name: str) -> bool:
    """True for an existing local folder or a hub id already in the Hugging Face cache."""
    if Path(name).expanduser().is_dir():
        return True
    if "/" not in name:
        return False
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return False
    snapshots = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def load_choices(available_bytes: int, path: Path | None = None,
                 downloaded: Callable[[str], bool] = is_downloaded) -> list[ModelChoice]:
    """The catalog's models, flagged against ``available_bytes`` of memory; [] with no catalog."""
    raw = _raw_catalog(path)
    choices = []
    for role, entry in _entries(raw):
        name = str(entry.get("id") or entry.get("hub_id") or entry.get("repo") or entry.get("name") or "")
        if not name:
            continue
        memory = _memory_bytes(entry)
        params = entry.get("params") or entry.get("parameters") or ""
        if isinstance(params, (int, float)):
            params = f"{params / 1e9:.1f}B params" if params >= 1e9 else f"{params / 1e6:.0f}M params"
        choices.append(
            ModelChoice(
                name=name,
                role=role,
                memory_bytes=memory,
                params=str(params),
                note=str(entry.get("note") or entry.get("description") or ""),
                fits=memory is None or memory <= available_bytes,
                downloaded=downloaded(name),
            )
        )
    return choices


def _raw_catalog(path: Path | None) -> dict[str, Any]:
    if path is None:
        try:
            module = importlib.import_module("mlx_distill.catalog")
        except ModuleNotFoundError:
            module = None
        found = getattr(module, "CATALOG_PATH", None) or getattr(module, "catalog_path", None)
        path = Path(found() if callable(found) else found) if found else catalog_path()
    try:
        with Path(path).open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def find_choice(choices: Iterable[ModelChoice], name: str) -> ModelChoice | None:
    return next((choice for choice in choices if choice.name == name), None)
