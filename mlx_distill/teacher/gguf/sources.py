"""Where a GGUF teacher is: a .gguf path, ``ollama:NAME[:TAG]`` (the Ollama store) or
``lmstudio:PUBLISHER/MODEL[/FILE.gguf]`` (LM Studio's models folder); and the GGUF models already
on this machine in those two stores.

A model name never leads outside its store: every path is resolved (links and ``..``) and checked
to stay inside the store's folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlx_distill.errors import DistillError
from mlx_distill.teacher.gguf.header import GGUFHeader, check_gguf_header, read_gguf_header


def cache_root() -> Path:
    """mlx-distill's user cache: ``$MLX_DISTILL_CACHE``, else ``$XDG_CACHE_HOME/mlx-distill``,
    else ``~/.cache/mlx-distill``."""
    if os.environ.get("MLX_DISTILL_CACHE"):
        return Path(os.environ["MLX_DISTILL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "mlx-distill"


def is_gguf_source(teacher: str) -> bool:
    """Whether ``teacher`` names a GGUF model (a .gguf path, ``ollama:...`` or ``lmstudio:...``)."""
    if teacher.startswith(("ollama:", "lmstudio:")) or teacher.lower().endswith(".gguf"):
        return True
    path = Path(teacher).expanduser()
    if path.is_file():
        with path.open("rb") as handle:
            return handle.read(4) == b"GGUF"
    return False


OLLAMA_REGISTRY = "registry.ollama.ai"
_OLLAMA_DIGEST = re.compile(r"^sha256[:-][0-9a-f]{64}$")


def _inside(root: Path, path: Path, what: str) -> Path:
    """``path`` with every link and ``..`` resolved, refused when that leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise DistillError(f"{what} leads outside {root} (to {real}); give a model name as the app lists it")
    return real


def ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or "~/.ollama/models").expanduser()


def lmstudio_root() -> Path:
    return Path(os.environ.get("LMSTUDIO_MODELS") or "~/.lmstudio/models").expanduser()


def _manifest_model_digest(manifest: Path, name: str) -> str:
    """The digest of the model layer an Ollama manifest names (checked: a sha256 digest)."""
    again = f"run `ollama pull {name}` again"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DistillError(f"Ollama manifest {manifest} is not readable JSON ({type(error).__name__}); "
                           f"{again}") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise DistillError(f"Ollama manifest {manifest} has no list of layers; {again}")
    models = [layer for layer in layers
              if isinstance(layer, dict) and layer.get("mediaType") == "application/vnd.ollama.image.model"]
    if not models:
        raise DistillError(f"Ollama manifest {manifest} names no model layer; {again}")
    digest = models[0].get("digest")
    if not isinstance(digest, str) or not _OLLAMA_DIGEST.match(digest):
        raise DistillError(f"Ollama manifest {manifest}: the model layer's digest {digest!r} is not a sha256 "
                           f"digest; {again}")
    return digest


def _ollama_blob(name: str) -> Path:
    root = ollama_root()
    model, _, tag = name.partition(":")
    host, _, rest = model.partition("/")
    if "." in host and rest:  # pulled from another registry: hf.co/owner/repo:tag
        registry, repo = host, rest
    else:
        registry, repo = OLLAMA_REGISTRY, model if "/" in model else f"library/{model}"
    manifests = root / "manifests"
    manifest = _inside(manifests, manifests / registry / repo / (tag or "latest"), f"Ollama model name {name!r}")
    if not manifest.is_file():
        raise DistillError(f"Ollama model {name!r} is not pulled (no {manifest}); run `ollama pull {name}` "
                           "or set OLLAMA_MODELS to your models folder")
    digest = _manifest_model_digest(manifest, name)
    blob = _inside(root / "blobs", root / "blobs" / digest.replace(":", "-"), f"Ollama model {name!r}'s blob")
    if not blob.is_file():
        raise DistillError(f"Ollama model {name!r}: its weights {blob} are missing; run `ollama pull {name}` again")
    return blob


def _model_files(folder: Path) -> list[Path]:
    """The .gguf files of a folder that hold a language model (a vision model's projector,
    ``mmproj-*.gguf``, sits beside it and is not one)."""
    return sorted(f for f in folder.glob("*.gguf") if "mmproj" not in f.name.lower())


def _lmstudio_file(name: str) -> Path:
    root = lmstudio_root()
    path = _inside(root, root / name, f"LM Studio model name {name!r}")
    if path.is_file():
        return path
    if not path.is_dir():
        raise DistillError(f"LM Studio model {name!r} not found ({path} does not exist); download it in LM Studio "
                           "or give PUBLISHER/MODEL as listed under ~/.lmstudio/models (or set LMSTUDIO_MODELS)")
    files = _model_files(path)
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "no .gguf file"
        raise DistillError(f"LM Studio model folder {path} holds {found}; name one file: lmstudio:{name}/FILE.gguf")
    return _inside(root, files[0], f"LM Studio model {name!r}")


def resolve_gguf(teacher: str) -> Path:
    """The GGUF file a teacher name points to (see ``is_gguf_source``).

    Raises:
        DistillError: the file does not exist, an Ollama model is not pulled, or an LM Studio
            model is not downloaded; one line with the fix.
    """
    if teacher.startswith("ollama:"):
        return _ollama_blob(teacher.removeprefix("ollama:"))
    if teacher.startswith("lmstudio:"):
        return _lmstudio_file(teacher.removeprefix("lmstudio:"))
    path = Path(teacher).expanduser()
    if not path.is_file():
        raise DistillError(f"GGUF file not found: {teacher}; give an existing .gguf file")
    return path.resolve()


def check_gguf(teacher: str) -> GGUFHeader:
    """Resolve and open a GGUF teacher without loading or converting it (header checks only)."""
    header = read_gguf_header(resolve_gguf(teacher))
    check_gguf_header(header)
    return header




@dataclass(frozen=True)
class LocalGGUF:
    """A GGUF model found in the Ollama store or LM Studio's folder."""

    name: str  # what to give as the teacher: ollama:NAME:TAG or lmstudio:PUBLISHER/MODEL[/FILE]
    path: Path
    size: int
    header: GGUFHeader | None  # None when the file cannot be read (``problem`` says why)
    problem: str = ""  # why it cannot be a teacher ("" when it can)

    @property
    def supported(self) -> bool:
        return not self.problem

    @property
    def architecture(self) -> str:
        return self.header.architecture if self.header else "?"

    @property
    def weights(self) -> int:
        """The parameter count (elements of every tensor)."""
        return sum(tensor.elements for tensor in self.header.tensors) if self.header else 0

    @property
    def quant(self) -> str:
        """The tensor type holding most of the weights (Q4_K for a Q4_K_M file)."""
        by_type: dict[str, int] = {}
        for tensor in self.header.tensors if self.header else ():
            by_type[tensor.type_name] = by_type.get(tensor.type_name, 0) + tensor.nbytes
        return max(by_type, key=by_type.get) if by_type else "?"


def _ollama_names(root: Path) -> list[str]:
    names = []
    manifests = root / "manifests"
    for manifest in sorted(manifests.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        registry, namespace, model, tag = manifest.relative_to(manifests).parts
        if registry == OLLAMA_REGISTRY:
            names.append(f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}")
        else:
            names.append(f"{registry}/{namespace}/{model}:{tag}")
    return names


def _lmstudio_names(root: Path) -> list[str]:
    names = []
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        files = _model_files(folder)
        base = folder.relative_to(root).as_posix()
        names += [base] if len(files) == 1 else [f"{base}/{f.name}" for f in files]
    return names


def local_gguf_models() -> list[LocalGGUF]:
    """Every GGUF model in the Ollama store (``$OLLAMA_MODELS``) and LM Studio's models folder
    (``$LMSTUDIO_MODELS``), each with its header, or the one-line reason it cannot be used."""
    found = []
    for prefix, names in (("ollama:", _ollama_names(ollama_root())), ("lmstudio:", _lmstudio_names(lmstudio_root()))):
        for name in names:
            try:
                path = resolve_gguf(prefix + name)
                size = path.stat().st_size
            except (DistillError, OSError) as error:
                found.append(LocalGGUF(prefix + name, Path(), 0, None, str(error)))
                continue
            try:
                header = read_gguf_header(path)
            except DistillError as error:
                found.append(LocalGGUF(prefix + name, path, size, None, str(error)))
                continue
            try:
                check_gguf_header(header)
            except DistillError as error:
                found.append(LocalGGUF(prefix + name, path, size, header, str(error).partition(": ")[2]))
                continue
            found.append(LocalGGUF(prefix + name, path, size, header))
    return found
