"""The model catalog (models/catalog.toml): recommended teachers and students, their sizes and
memory needs, whether they fit this machine and whether they are already downloaded."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mlx_distill.errors import DistillError
from mlx_distill.platform import is_apple_gpu, total_memory_bytes

GB = 1_000_000_000
# Affine quantization stores a scale and a bias (16 bits each) per group of 64 weights.
QUANT_OVERHEAD_BITS = 0.5
# Teacher generation: KV cache, activations and MLX buffers on top of the weights (estimate).
TEACHER_HEADROOM_BYTES = int(1.5 * GB)
# Student training in float32 with AdamW: weights + gradients + two moments = 16 bytes a
# parameter, plus activations for a batch of 8 x (512 + 256) tokens (estimate).
STUDENT_BYTES_PER_PARAM = 16
STUDENT_ACTIVATION_BYTES = int(2 * GB)
# What macOS and other programs keep for themselves.
SYSTEM_RESERVE_FRACTION = 0.25


@dataclass(frozen=True)
class CatalogModel:
    name: str
    id: str
    kind: str  # teacher | student
    params_billion: float
    bits: int
    note: str = ""
    ollama: str = ""  # the same model in Ollama's library (``ollama pull NAME``), if there is one
    download_gb: float | None = None  # the hub files' published size, where it was checked
    size_source: str = ""  # where download_gb was read

    @property
    def download_bytes(self) -> int:
        """The published size of the hub files where the catalog has it, else an estimate from
        the parameter count and bit width."""
        if self.download_gb:
            return int(self.download_gb * GB)
        bits = self.bits + (QUANT_OVERHEAD_BITS if self.bits < 16 else 0)
        return int(self.params_billion * GB * bits / 8)

    @property
    def size_is_published(self) -> bool:
        return bool(self.download_gb)

    @property
    def memory_bytes(self) -> int:
        """Estimated memory for this model's stage on a Mac: generation for a teacher, training
        for a student."""
        return self.runtime_memory_bytes(apple_gpu=True)

    def runtime_memory_bytes(self, apple_gpu: bool) -> int:
        """As ``memory_bytes``; on a CPU-only machine the teacher is dequantized to float32
        at load (MLX's quantized CPU matmul is far slower), so it needs 8x the weight memory."""
        if self.kind == "teacher":
            return teacher_memory_bytes(int(self.params_billion * GB), self.download_bytes, apple_gpu)
        return int(self.params_billion * GB * STUDENT_BYTES_PER_PARAM) + STUDENT_ACTIVATION_BYTES


def teacher_memory_bytes(weights: int, stored_bytes: int, apple_gpu: bool) -> int:
    """Memory a teacher of ``weights`` parameters stored in ``stored_bytes`` needs to generate:
    as stored on Apple silicon, float32 (4 bytes a weight) on a CPU-only machine, plus headroom."""
    return (stored_bytes if apple_gpu else weights * 4) + TEACHER_HEADROOM_BYTES


@dataclass(frozen=True)
class Catalog:
    teachers: tuple[CatalogModel, ...]
    students: tuple[CatalogModel, ...]
    default_teacher: str
    default_student: str

    def find(self, name: str) -> CatalogModel | None:
        for model in (*self.teachers, *self.students):
            if name in (model.name, model.id):
                return model
        return None


def catalog_path() -> Path:
    """models/catalog.toml in a source checkout, or the copy shipped in the wheel."""
    checkout = Path(__file__).resolve().parents[1] / "models" / "catalog.toml"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("mlx_distill.catalog_data") / "catalog.toml"))


@lru_cache(maxsize=1)
def load_catalog(path: str | None = None) -> Catalog:
    source = Path(path) if path else catalog_path()
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DistillError(f"cannot read the model catalog {source}: {error}") from error

    def models(kind: str, default_bits: int) -> tuple[CatalogModel, ...]:
        return tuple(
            CatalogModel(
                name=entry["name"],
                id=entry["id"],
                kind=kind,
                params_billion=float(entry["params"]),
                bits=int(entry.get("bits", default_bits)),
                note=entry.get("note", ""),
                ollama=entry.get("ollama", ""),
                download_gb=float(entry["download_gb"]) if "download_gb" in entry else None,
                size_source=entry.get("size_source", ""),
            )
            for entry in data.get(kind, [])
        )

    defaults = data.get("defaults", {})
    return Catalog(
        teachers=models("teacher", 4),
        students=models("student", 32),
        default_teacher=defaults.get("teacher", ""),
        default_student=defaults.get("student", ""),
    )


def resolve_model(name: str) -> str:
    """A catalog name (``qwen2.5-7b``) becomes its hub id; hub ids and local paths pass through."""
    model = load_catalog().find(name)
    return model.id if model else name


def usable_memory_bytes() -> int:
    return int(total_memory_bytes() * (1 - SYSTEM_RESERVE_FRACTION))


def fits_in_memory(model: CatalogModel, memory_bytes: int | None = None) -> bool:
    """Whether the model's stage fits this machine (or ``memory_bytes``), as it would run here."""
    need = model.runtime_memory_bytes(apple_gpu=is_apple_gpu())
    return need <= (usable_memory_bytes() if memory_bytes is None else memory_bytes)


def is_downloaded(repo_id: str) -> bool:
    """True when the local Hugging Face cache (or a local folder) already holds the model."""
    if Path(repo_id).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id or cache is "not downloaded"
        return False
