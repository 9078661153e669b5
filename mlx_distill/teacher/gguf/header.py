"""Read a GGUF file's header (metadata and tensor table) without loading any weight.

Written here rather than through ``gguf.GGUFReader`` because it must be fast on files of many GB
(the tokenizer's arrays are skipped, not parsed: ``mlx-distill models`` reads every local file) and
must refuse a hostile header (lengths past the end, odd alignments) in one line.

Enough to refuse a bad file in one line before any work: not a GGUF file, truncated (a tensor
reaches past the end of the file), an architecture or a tensor type the converter does not handle.
Array metadata (the tokenizer's vocabulary and merges) is skipped; only its length is kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from mlx_distill.errors import DistillError
from mlx_distill.teacher.gguf.architectures import ARCHITECTURE_NAMES, known_tensor
from mlx_distill.teacher.gguf.quants import SUPPORTED_TYPES

# ggml tensor types: id -> (name, elements per block, bytes per block), from the gguf package.
TENSOR_TYPES = {kind.value: (kind.name, *GGML_QUANT_SIZES[kind]) for kind in GGMLQuantizationType}
ARCHITECTURES = tuple(ARCHITECTURE_NAMES)

_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type_name: str
    shape: tuple[int, ...]  # as GGUF lists it: the fastest-moving dimension first
    offset: int  # from the start of the data section
    nbytes: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays as ("array", length)
    tensors: tuple[GGUFTensor, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def tensor_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for tensor in self.tensors:
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + 1
        return counts


class _Truncated(Exception):
    pass


def _remaining(handle: BinaryIO) -> int:
    here = handle.tell()
    end = handle.seek(0, 2)
    handle.seek(here)
    return end - here


def _read(handle: BinaryIO, size: int) -> bytes:
    if size > _remaining(handle):  # a length field past the end (2**63): never allocate it
        raise _Truncated
    data = handle.read(size)
    if len(data) != size:
        raise _Truncated
    return data


def _unpack(handle: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]


def _string(handle: BinaryIO) -> str:
    return _read(handle, _unpack(handle, "<Q")).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _unpack(handle, _SCALARS[kind])
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item_kind, count = _unpack(handle, "<I"), _unpack(handle, "<Q")
        if item_kind in _SCALARS:
            skip = count * struct.calcsize(_SCALARS[item_kind])
            if skip > _remaining(handle):
                raise _Truncated
            handle.seek(skip, 1)
        else:
            for _ in range(count):
                _value(handle, item_kind)
        return ("array", count)
    raise ValueError(f"unknown metadata value type {kind}")


def _alignment(path: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        shown = f"an array of {value[1]}" if isinstance(value, tuple) else repr(value)
        raise DistillError(f"{path}: GGUF general.alignment is {shown}, not a power of two; the file is "
                           "damaged or not written by a GGUF tool; download the file again")
    return value


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of a GGUF file, checked to be whole.

    Raises:
        DistillError: not a GGUF file, or truncated (an incomplete download); one line with the fix.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            if handle.read(4) != _MAGIC:
                raise DistillError(f"{path} is not a GGUF file (no GGUF magic bytes); give a .gguf model file")
            version = _unpack(handle, "<I")
            if version not in (2, 3):
                raise DistillError(f"{path} is GGUF version {version}; only versions 2 and 3 are read; "
                                   "re-download a current file")
            tensor_count, kv_count = _unpack(handle, "<Q"), _unpack(handle, "<Q")
            metadata = {}
            for _ in range(kv_count):
                key = _string(handle)
                metadata[key] = _value(handle, _unpack(handle, "<I"))
            tensors = []
            for _ in range(tensor_count):
                name = _string(handle)
                dims = tuple(_unpack(handle, "<Q") for _ in range(_unpack(handle, "<I")))
                type_id, offset = _unpack(handle, "<I"), _unpack(handle, "<Q")
                type_name, block, block_bytes = TENSOR_TYPES.get(type_id, (f"type {type_id}", 1, 0))
                count = 1
                for dim in dims:
                    count *= dim
                tensors.append(GGUFTensor(name, type_name, dims, offset, count // block * block_bytes))
            alignment = _alignment(path, metadata.get("general.alignment", 32))
            data_offset = -(-handle.tell() // alignment) * alignment
    except _Truncated:
        raise DistillError(f"{path} is truncated ({size} bytes end inside the header; an incomplete download?); "
                           "download the file again") from None
    except (ValueError, UnicodeDecodeError, struct.error) as error:
        raise DistillError(f"{path} is not a readable GGUF file ({error}); download the file again") from None
    end = max((data_offset + t.offset + t.nbytes for t in tensors), default=data_offset)
    if end > size:
        raise DistillError(f"{path} is truncated ({size} of {end} bytes; an incomplete download?); "
                           "download the file again")
    return GGUFHeader(path, version, metadata, tuple(tensors), data_offset)


def check_gguf_header(header: GGUFHeader) -> None:
    """Refuse an architecture or tensor type the converter does not handle (one line with the fix)."""
    arch = header.architecture
    if arch not in ARCHITECTURES:
        raise DistillError(f"{header.path}: GGUF architecture {arch!r} is not supported (only "
                           f"{', '.join(ARCHITECTURES)}); use a GGUF of one of those or an MLX model folder")
    stray = [t.name for t in header.tensors if not known_tensor(arch, t.name)]
    if stray:
        raise DistillError(f"{header.path}: GGUF tensor {stray[0]!r} has no place in a {arch} model; use a plain "
                           f"{ARCHITECTURE_NAMES[arch]} GGUF file")
    unsupported = sorted({t.type_name for t in header.tensors} - set(SUPPORTED_TYPES))
    if unsupported:
        raise DistillError(f"{header.path}: tensor type {', '.join(unsupported)} cannot be read (the gguf package "
                           "has no dequantization for it); use a Q4_K_M, Q8_0 or F16 file of the model")
