"""The student: an MLX T5 (one file for the architecture), loaded from and saved to the Hugging
Face layout, and generation (batched greedy, beam, sampling, streaming)."""

from mlx_distill.student.io import (
    StudentResponse,
    generate,
    generate_batch,
    generate_tokens,
    init_student,
    load_student,
    load_tokenizer,
    save_student,
    stream_generate,
)
from mlx_distill.student.t5 import Model, ModelArgs

__all__ = ["StudentResponse", "Model", "ModelArgs", "load_student", "save_student", "init_student", "load_tokenizer", "generate",
           "generate_batch", "generate_tokens", "stream_generate"]
