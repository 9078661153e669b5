"""The teacher stage: a local LLM writes a rationale and an answer for each training example.

Other packages import these names from ``mlx_distill.teacher`` only, never its modules:

- ``generate_rationales`` / ``generate_rationales_sharded``: the stage on one process / on every
  rank of an ``mx.distributed`` group; both return a ``RationaleSummary``.
- ``load_teacher`` / ``release_teacher`` / ``current_teacher``: the teacher LLM (mlx-lm), with a
  memory check before it loads; ``check_teacher`` opens a teacher without loading it (config and
  safetensors headers), to refuse a bad one before any work.
- ``load_prompt`` / ``render_prompt`` / ``parse_output``: few-shot prompts and output parsing.
"""

from mlx_distill.teacher.generate import RationaleSummary, finished_records, generate_rationales
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
from mlx_distill.teacher.parse import ParsedOutput, parse_output
from mlx_distill.teacher.prompt import (
    BUILTIN_TASKS,
    STOP_STRINGS,
    PromptTemplate,
    build_completion,
    build_messages,
    build_query,
    cut_at_stop,
    format_question,
    load_prompt,
    parse_prompt_text,
    render_prompt,
    stop_token_ids,
)
from mlx_distill.teacher.sharded import generate_rationales_sharded, merge_parts

__all__ = [
    "BUILTIN_TASKS", "PRECISIONS", "QUANTIZE_BITS", "STOP_STRINGS", "MemoryEstimate", "ParsedOutput",
    "PromptTemplate", "RationaleSummary", "Teacher", "build_completion", "build_messages", "build_query",
    "check_teacher", "current_teacher", "cut_at_stop", "estimate_memory", "finished_records", "format_question", "generate_rationales",
    "generate_rationales_sharded", "load_prompt", "load_teacher", "memory_report", "merge_parts",
    "parse_output", "parse_prompt_text", "release_teacher", "render_prompt", "stop_token_ids",
    "teacher_identity",
]
