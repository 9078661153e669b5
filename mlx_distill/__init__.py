"""mlx-distill: distilling step-by-step from a local MLX teacher LLM into an MLX T5 student.

The package is one folder per stage, in the order data flows: ``data`` → ``teacher`` → ``train``
(which uses ``student``) → ``pipeline`` (the stages wired in one run folder); ``distributed``
spreads them over several Macs, ``commands`` is the CLI, ``testing`` builds tiny models for tests
and the demo, and the terminal UI ships as ``mlx_distill.tui``. Each stage's ``__init__`` lists
its public names.

Shortcuts for the student's API (``mlx_distill.student``): ``load_student``, ``save_student``,
``generate``, ``stream_generate``, imported on first use so that the CLI starts without MLX.
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
