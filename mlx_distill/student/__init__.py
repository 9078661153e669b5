"""The student: an MLX T5 (one file for the architecture), loaded from and saved to the Hugging
Face layout, and generation on mlx-lm's sampler and streaming detokenizer (batched greedy, beam,
sampling, streaming)."""

from mlx_distill.student.generate import (
    MAX_INPUT_TOKENS,
    MAX_NEW_TOKENS,
    StudentResponse,
    TokenText,
    decode_tokens,
    encode_prompts,
    generate,
    generate_batch,
    generate_tokens,
    stream_generate,
)
from mlx_distill.student.io import (
    GROUP_SIZES,
    QUANTIZE_BITS,
    check_safetensors,
    check_student,
    count_parameters,
    default_group_size,
    init_student,
    load_student,
    load_tokenizer,
    quantization_of,
    quantize_student,
    save_safetensors,
    save_student,
)
from mlx_distill.student.continuous import ContinuousDecoder, RowRequest, RowToken
from mlx_distill.student.ops import exp_nonpositive, softmax_last_axis
from mlx_distill.student.t5 import Model, ModelArgs

__all__ = ["ContinuousDecoder", "GROUP_SIZES", "MAX_INPUT_TOKENS", "MAX_NEW_TOKENS", "Model", "QUANTIZE_BITS", "ModelArgs", "RowRequest", "RowToken", "StudentResponse", "TokenText", "check_safetensors", "check_student",
           "count_parameters", "default_group_size", "decode_tokens", "encode_prompts", "exp_nonpositive", "generate", "generate_batch", "generate_tokens",
           "init_student", "load_student", "load_tokenizer", "quantization_of", "quantize_student", "save_safetensors", "save_student",
           "softmax_last_axis", "stream_generate"]
