"""How much memory a run lets MLX take, and how many prompt tokens one GPU step may process.

On Apple silicon MLX's own default limit is 1.5x the GPU's recommended working set: a model near
it pages the whole Mac out (or the GPU resets) instead of failing. A run sets the limit to what is
free now, at most the recommended working set, so a teacher that does not fit is refused in one
line before it loads. On a CPU backend the limit is the memory free now.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Iterator

import mlx.core as mx

from mlx_distill.machine.tools import is_macos, run_tool
from mlx_distill.platform import available_memory_bytes, format_bytes, total_memory_bytes

GB = 1000**3
# mlx-lm's prefill step; also the most a CPU run takes (no display watchdog on a CPU).
MAX_PREFILL_STEP = 2048
MIN_PREFILL_STEP = 64
# Prompt tokens over the whole batch in one prefill step on Metal, by recommended working set: a
# bigger GPU does more in the same time. A guess made from GPU sizes, not measured on these Macs.
PREFILL_TOKEN_BUDGETS = ((12 * GB, 2048), (48 * GB, 4096), (None, 8192))

_VM_PAGE_SIZE = re.compile(r"page size of (\d+) bytes")
_VM_PAGES = re.compile(r"^Pages (free|inactive|speculative|purgeable):\s+(\d+)\.", re.M)


@dataclass(frozen=True)
class MemoryPlan:
    """The memory a run gives MLX, and where the figure comes from."""

    device: str  # "Apple M2 Pro (Metal)" or "cpu"
    total_bytes: int  # unified memory on a Mac, RAM elsewhere
    recommended_bytes: int | None  # Metal's recommended working set; None on a CPU backend
    available_bytes: int  # free now (other programs' memory left out)
    limit_bytes: int  # what mx.set_memory_limit gets
    wired_bytes: int | None  # what mx.set_wired_limit gets (Metal only)
    reason: str

    def describe(self) -> str:
        return f"{format_bytes(self.limit_bytes)} ({self.reason})"


def device_info() -> dict[str, Any]:
    """MLX's facts about the default device (name, memory sizes on Metal); {} when MLX has none."""
    try:
        return dict(mx.device_info())
    except Exception:  # noqa: BLE001 - an MLX without device_info
        return {}


def _macos_free_bytes() -> int | None:
    """Free + inactive + speculative + purgeable pages from ``vm_stat``: what a model can take
    without pushing other programs out."""
    output = run_tool(["vm_stat"])
    page = _VM_PAGE_SIZE.search(output or "")
    if output is None or page is None:
        return None
    return sum(int(count) for _, count in _VM_PAGES.findall(output)) * int(page.group(1))


def memory_plan(limit_gb: float = 0.0) -> MemoryPlan:
    """The MLX memory limit for a run: ``limit_gb`` when given, else the memory free now, at most
    the device's recommended working set."""
    info = device_info()
    recommended = int(info["max_recommended_working_set_size"]) if info.get("max_recommended_working_set_size") else None
    total = int(info.get("memory_size") or total_memory_bytes())
    free = (_macos_free_bytes() if is_macos() else None) or available_memory_bytes()
    name = str(info.get("device_name") or "")
    device = f"{name} (Metal)" if recommended else "cpu"
    wired = recommended if recommended and mx.metal.is_available() else None
    if limit_gb > 0:
        limit, reason = int(limit_gb * GB), "run.memory_limit_gb"
    elif recommended and recommended <= free:
        limit, reason = recommended, "the GPU's recommended working set"
    else:
        limit, reason = free, "the memory free now"
    return MemoryPlan(device, total, recommended, free, limit, min(wired, limit) if wired else None, reason)


@contextlib.contextmanager
def memory_limit(plan: MemoryPlan) -> Iterator[MemoryPlan]:
    """Within the block MLX's memory (and, on Metal, wired) limit are the plan's; restored after."""
    previous = mx.set_memory_limit(plan.limit_bytes)
    previous_wired = None
    if plan.wired_bytes:
        with contextlib.suppress(Exception):  # below macOS 15 or above the system's wired limit
            previous_wired = mx.set_wired_limit(plan.wired_bytes)
    try:
        yield plan
    finally:
        mx.set_memory_limit(previous)
        if previous_wired is not None:
            with contextlib.suppress(Exception):
                mx.set_wired_limit(previous_wired)


def model_memory_budget() -> int:
    """Bytes a model may take now: the memory free, at most MLX's memory limit (a run sets it)."""
    return min(available_memory_bytes(), int(mx.get_memory_limit()))


def prefill_step_size(batch_size: int, plan: MemoryPlan | None = None) -> int:
    """Prompt tokens per sequence in one prefill step, so no GPU command runs for seconds (the
    display watchdog resets the GPU then): a token budget for the batch from the device's size."""
    recommended = plan.recommended_bytes if plan is not None else _recommended_bytes()
    if not recommended:
        return MAX_PREFILL_STEP
    budget = next(tokens for size, tokens in PREFILL_TOKEN_BUDGETS if size is None or recommended <= size)
    step = budget // max(batch_size, 1)
    return max(MIN_PREFILL_STEP, min(MAX_PREFILL_STEP, step - step % MIN_PREFILL_STEP))


def _recommended_bytes() -> int | None:
    size = device_info().get("max_recommended_working_set_size")
    return int(size) if size else None
