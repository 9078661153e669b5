"""The teacher stage: a local LLM writes a rationale and an answer for each training example.

Other packages import these names from ``mlx_distill.teacher`` only, never its modules:

- ``generate_rationales`` / ``generate_rationales_sharded``: the stage on one process / on every
  rank of an ``mx.distributed`` group; both return a ``RationaleSummary``.
- ``load_teacher`` / ``release_teacher`` / ``current_teacher``: the teacher LLM (mlx-lm), with a
  memory check before it loads; ``check_teacher`` opens a teacher without loading it (config and
  safetensors headers), to refuse a bad one before any work.
- ``load_prompt`` / ``render_prompt`` / ``parse_output``: few-shot prompts and output parsing;
  ``pick_exemplars`` (the user's own rows as exemplars), ``choices_in_input``, ``restates_answer``.
- GGUF teachers: ``is_gguf_source`` / ``resolve_gguf`` / ``check_gguf`` / ``gguf_teacher_folder``
  (converted once into ``cache_root()``); ``smollm2_gguf``: the demo's and the tests' real teacher.
"""

from mlx_distill.teacher.generate import RationaleSummary, exemplars_for, finished_records, generate_rationales
from mlx_distill.teacher.model import (
    PRECISIONS,
    QUANTIZE_BITS,
    MemoryEstimate,
    Teacher,
    check_teacher,
    current_teacher,
    estimate_memory,
    load_teacher,
    memory_report,
    release_teacher,
    teacher_identity,
)
from mlx_distill.teacher.gguf import (
    LocalGGUF,
    cache_root,
    check_gguf,
    convert_gguf,
    gguf_teacher_folder,
    is_gguf_source,
    lmstudio_root,
    local_gguf_models,
    ollama_root,
    resolve_gguf,
)
from mlx_distill.teacher.parse import ParsedOutput, parse_output, restates_answer
from mlx_distill.teacher.prompt import (
    BUILTIN_TASKS,
    STOP_STRINGS,
    PromptTemplate,
    build_completion,
    build_messages,
    build_query,
    choices_in_input,
    cut_at_stop,
    exemplar_prompt_text,
    format_question,
    load_prompt,
    parse_prompt_text,
    pick_exemplars,
    render_prompt,
    stop_token_ids,
)
from mlx_distill.teacher.sharded import generate_rationales_sharded, merge_parts
from mlx_distill.teacher.smollm2 import smollm2_gguf, smollm2_path

__all__ = [
    "BUILTIN_TASKS", "PRECISIONS", "QUANTIZE_BITS", "STOP_STRINGS", "build_completion", "build_messages",
    "build_query", "cache_root", "check_gguf", "check_teacher", "choices_in_input", "convert_gguf",
    "current_teacher", "cut_at_stop", "estimate_memory", "exemplar_prompt_text", "exemplars_for",
    "finished_records", "format_question", "generate_rationales", "generate_rationales_sharded",
    "gguf_teacher_folder", "is_gguf_source", "lmstudio_root", "LocalGGUF", "local_gguf_models", "load_prompt",
    "load_teacher", "memory_report", "MemoryEstimate",
    "merge_parts", "ollama_root", "parse_output", "parse_prompt_text", "ParsedOutput", "pick_exemplars", "PromptTemplate",
    "RationaleSummary", "release_teacher", "render_prompt", "resolve_gguf", "restates_answer", "smollm2_gguf",
    "smollm2_path", "stop_token_ids", "Teacher", "teacher_identity",
]
