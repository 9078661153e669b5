"""GGUF teachers: a .gguf file (or an Ollama / LM Studio model) becomes an mlx-lm model folder.

- ``sources``: where a GGUF model is (path, ``ollama:``, ``lmstudio:``) and which are on this machine;
- ``header``: the file's header, read and checked without loading a weight;
- ``quants``: each tensor type onto MLX's affine quantization (exact where MLX can hold it);
- ``architectures``: tensor names, llama.cpp's changes undone, and the config per architecture;
- ``convert``: the conversion, tensor by tensor; ``cache``: converted once into the user cache.
"""

from mlx_distill.teacher.gguf.architectures import ARCHITECTURE_NAMES, unpermute_rows
from mlx_distill.teacher.gguf.cache import file_sha256, gguf_teacher_folder
from mlx_distill.teacher.gguf.convert import CONVERTER_VERSION, convert_gguf
from mlx_distill.teacher.gguf.header import GGUFHeader, GGUFTensor, check_gguf_header, read_gguf_header
from mlx_distill.teacher.gguf.quants import EXACT_TYPES, SUPPORTED_TYPES, convert_tensor, pack_codes
from mlx_distill.teacher.gguf.sources import (
    LocalGGUF,
    cache_root,
    check_gguf,
    is_gguf_source,
    local_gguf_models,
    lmstudio_root,
    ollama_root,
    resolve_gguf,
)

__all__ = ["ARCHITECTURE_NAMES", "CONVERTER_VERSION", "EXACT_TYPES", "GGUFHeader", "GGUFTensor", "LocalGGUF",
           "SUPPORTED_TYPES", "cache_root", "check_gguf", "check_gguf_header", "convert_gguf", "convert_tensor",
           "file_sha256", "gguf_teacher_folder", "is_gguf_source", "lmstudio_root", "local_gguf_models",
           "ollama_root", "pack_codes", "read_gguf_header", "resolve_gguf", "unpermute_rows"]
