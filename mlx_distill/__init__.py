"""mlx-distill: distilling step-by-step from a local MLX teacher LLM into an MLX T5 student.

Public names: ``load_student``, ``save_student``, ``generate``, ``stream_generate``.
They are imported on first use so that ``import mlx_distill`` stays light for the CLI.
"""

__version__ = "0.1.0"

_LAZY = {
    "load_student": "mlx_distill.student",
    "save_student": "mlx_distill.student",
    "generate": "mlx_distill.student",
    "stream_generate": "mlx_distill.student",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlx_distill' has no attribute {name!r}")
