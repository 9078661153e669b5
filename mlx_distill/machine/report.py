"""What ``mlx-distill doctor`` says about the laptop side: Metal, memory limit, prefill, power,
sleep, notifications; one line when none of it applies here."""

from __future__ import annotations

from mlx_distill.machine.awake import KeepAwake
from mlx_distill.machine.memory import memory_plan, prefill_step_size
from mlx_distill.machine.notify import notification_available
from mlx_distill.machine.power import power_status
from mlx_distill.machine.tools import TOOLS, is_macos, missing_tools
from mlx_distill.platform import format_bytes


def laptop_lines(*, batch_size: int, pause_below_battery: int, memory_limit_gb: float = 0.0) -> list[tuple[str, str]]:
    """(label, text) rows for ``doctor``, with the defaults a run would use."""
    plan = memory_plan(memory_limit_gb)
    if plan.recommended_bytes:
        metal = (f"{plan.device}: recommended working set {format_bytes(plan.recommended_bytes)} "
                 f"of {format_bytes(plan.total_bytes)}")
    else:
        metal = "none: MLX runs on the CPU"
    rows = [
        ("metal", metal),
        ("limit", f"a run sets MLX's memory limit to {plan.describe()}; run.memory_limit_gb changes it"),
        ("prefill", f"teacher prompts in steps of {prefill_step_size(batch_size, plan)} tokens a sequence "
                    f"(batch {batch_size}); run.prefill_step_size changes it"),
    ]
    if not is_macos():
        return rows + [("laptop", f"not macOS: no sleep prevention, battery pause or desktop notification "
                                  f"here ({', '.join(TOOLS)} are macOS tools)")]
    missing = missing_tools()
    status = power_status()
    if status is None:
        power = "unknown: pmset not found" if "pmset" in missing else "unknown: pmset -g batt gave no answer"
    elif status.percent is None:
        power = f"{status.describe()}: a run never pauses for power"
    elif pause_below_battery > 0:
        power = (f"{status.describe()}: on battery below {pause_below_battery}% a run waits between batches "
                 "(run.pause_below_battery = 0 turns it off)")
    else:
        power = f"{status.describe()}: run.pause_below_battery = 0, a run never pauses"
    sleep = ("kept awake while a stage works (caffeinate -i); --allow-sleep or run.keep_awake = false turns it off"
             if KeepAwake.available() else "caffeinate not found: the Mac may sleep during a run")
    notify = ("a notification and the bell when a run ends, fails or pauses; --no-notify or run.notify = false"
              if notification_available() else "osascript not found: only the terminal bell when a run ends")
    return rows + [("power", power), ("sleep", sleep), ("notify", notify)]
