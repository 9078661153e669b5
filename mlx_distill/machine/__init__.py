"""Machine facts and actions for long runs on a laptop: keep the Mac awake while a stage works,
pause on a low battery, MLX's memory limit, the prefill step size, notifications.

Behind macOS tools (``caffeinate``, ``pmset``, ``osascript``): on Linux, or where a tool is
missing, each action does nothing (``mlx-distill doctor`` says so). ``MLX_DISTILL_MACOS=1`` acts
as on macOS with whatever of those tools is on PATH (the tests put recording fakes there).
"""

from mlx_distill.machine.awake import KeepAwake
from mlx_distill.machine.laptop import LaptopRun
from mlx_distill.machine.memory import (
    MemoryPlan,
    device_info,
    memory_limit,
    memory_plan,
    model_memory_budget,
    prefill_step_size,
)
from mlx_distill.machine.notify import notification_available, notify
from mlx_distill.machine.report import laptop_lines
from mlx_distill.machine.power import CONTINUE_FILE, BatteryPause, PowerStatus, parse_pmset_batt, power_status
from mlx_distill.machine.stage import laptop_stage
from mlx_distill.machine.tools import FORCE_MACOS, TOOLS, find_tool, is_macos, missing_tools

__all__ = [
    "BatteryPause", "CONTINUE_FILE", "FORCE_MACOS", "KeepAwake", "LaptopRun", "MemoryPlan", "PowerStatus",
    "TOOLS", "device_info", "find_tool", "is_macos", "laptop_lines", "memory_limit", "memory_plan", "missing_tools",
    "model_memory_budget", "notification_available", "notify", "parse_pmset_batt", "power_status",
    "prefill_step_size", "laptop_stage",
]
