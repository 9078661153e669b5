"""The machine module: macOS tools found or not, the sleep assertion's lifetime, pmset, notifications,
the battery pause, the memory plan and the prefill step, and what `doctor` says.

Only the macOS tools are fake (``mlx_distill.testing.mac_tools``: caffeinate, pmset and osascript
cannot run on Linux), and ``mx.device_info`` where a test needs a Metal device's sizes (no Metal
here). Everything else is the real code.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import mlx.core as mx
import pytest

from mlx_distill import machine
from mlx_distill.config import parse_config
from mlx_distill.errors import DistillError
from mlx_distill.events import Paused, Resumed, never_stop
from mlx_distill.machine import power
from mlx_distill.testing.mac_tools import AC_POWER, BATTERY_POWER, DESKTOP, FakeMacTools

GB = 1000**3
# These check the figures of MLX's CPU backend (this Linux machine); a Mac runs MLX on Metal.
cpu_backend = pytest.mark.skipif(mx.metal.is_available(), reason="checks the CPU backend's figures")


@pytest.fixture
def fake_mac(tmp_path, monkeypatch) -> FakeMacTools:
    return FakeMacTools.install(tmp_path / "bin").activate(monkeypatch)


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


# -- Linux, or a tool missing: nothing happens ------------------------------------------------------

def test_off_macos_every_action_does_nothing_even_with_the_tools_on_path(tmp_path, monkeypatch):
    fake = FakeMacTools.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", fake.env()["PATH"])
    monkeypatch.setenv(machine.FORCE_MACOS, "0")
    assert not machine.is_macos() and machine.missing_tools() == list(machine.TOOLS)
    with machine.KeepAwake() as awake:
        assert not awake.held
    assert machine.power_status() is None
    machine.notify("done", bell=io.StringIO())
    calls = []
    wrapped = machine.BatteryPause(20, None, calls.append).wrap(never_stop)
    fake.set_power(on_battery=True, percent=5)
    assert wrapped() is False and calls == []
    assert fake.records() == []


def test_on_macos_without_the_tools_nothing_happens(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tool at all
    monkeypatch.setenv(machine.FORCE_MACOS, "1")
    assert machine.missing_tools() == list(machine.TOOLS)
    with machine.KeepAwake() as awake:
        assert not awake.held
    assert machine.power_status() is None


# -- keep awake ---------------------------------------------------------------------------------------

def test_the_assertion_is_caffeinate_i_w_our_pid_held_once_and_released_within_a_second(fake_mac):
    awake = machine.KeepAwake()
    awake.hold()
    awake.hold()  # a second stage: still one assertion
    _wait(lambda: fake_mac.assertions())
    released = time.time()
    awake.release()
    _wait(lambda: fake_mac.assertions()[0]["end"] is not None)
    (span,) = fake_mac.assertions()
    assert span["args"] == ["-i", "-w", str(os.getpid())]
    assert span["end"] - released < 1.0


def test_allow_sleep_takes_no_assertion(fake_mac):
    with machine.KeepAwake(enabled=False) as awake:
        assert not awake.held
    assert fake_mac.assertions() == []


# -- power --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, source, percent, on_battery", [
    (BATTERY_POWER.format(percent=18), "Battery Power", 18, True),
    (AC_POWER.format(percent=100), "AC Power", 100, False),
    ("Now drawing from 'AC Power'\n -InternalBattery-0 (id=123)\t80%; AC attached; not charging present: true\n",
     "AC Power", 80, False),
    (DESKTOP, "AC Power", None, False),
    ("Now drawing from 'UPS Power'\n -UPS CP1500 (id=1)\t90%; discharging\n", "UPS Power", None, False),
])
def test_pmset_batt_output_is_read(text, source, percent, on_battery):
    status = machine.parse_pmset_batt(text)
    assert (status.source, status.percent, status.on_battery) == (source, percent, on_battery)


def test_unreadable_pmset_output_is_no_status():
    assert machine.parse_pmset_batt("pmset: command not supported") is None


def test_power_status_asks_pmset(fake_mac):
    fake_mac.set_power(on_battery=True, percent=42)
    assert machine.power_status() == machine.PowerStatus("Battery Power", 42)
    assert [r["args"] for r in fake_mac.records("pmset")] == [["-g", "batt"]]


def _pause_in_thread(pause: machine.BatteryPause, should_stop=never_stop):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("stop", pause.wrap(should_stop)()))
    thread.start()
    return thread, result


def test_low_battery_pauses_until_power_returns(fake_mac):
    fake_mac.set_power(on_battery=True, percent=12)
    events = []
    thread, result = _pause_in_thread(machine.BatteryPause(20, None, events.append))
    _wait(lambda: events)
    time.sleep(0.3)
    assert thread.is_alive() and [type(e) for e in events] == [Paused]
    assert events[0].battery_percent == 12 and "12% (below 20%)" in events[0].message
    fake_mac.set_power(on_battery=False, percent=13)
    thread.join(timeout=20)
    assert result == {"stop": False}
    assert [type(e) for e in events] == [Paused, Resumed] and events[1].reason == "power"


def test_the_continue_file_goes_on_and_no_later_pause_follows(fake_mac, tmp_path, monkeypatch):
    fake_mac.set_power(on_battery=True, percent=5)
    go_on = tmp_path / machine.CONTINUE_FILE
    go_on.write_text("")  # left from an earlier run: not a word for this one
    events = []
    pause = machine.BatteryPause(20, go_on, events.append)
    assert not go_on.exists()
    thread, result = _pause_in_thread(pause)
    _wait(lambda: events)
    assert str(go_on) in events[0].message
    go_on.write_text("")
    thread.join(timeout=20)
    assert result == {"stop": False} and not go_on.exists()
    assert [type(e) for e in events] == [Paused, Resumed] and events[1].reason == "user"
    monkeypatch.setattr(power, "BATTERY_CHECK_SECONDS", 0.0)
    assert pause.wrap(never_stop)() is False and len(events) == 2


def test_a_stop_while_paused_stops(fake_mac):
    fake_mac.set_power(on_battery=True, percent=5)
    stop = threading.Event()
    events = []
    thread, result = _pause_in_thread(machine.BatteryPause(20, None, events.append), stop.is_set)
    _wait(lambda: events)
    stop.set()
    thread.join(timeout=20)
    assert result == {"stop": True} and [type(e) for e in events] == [Paused]


@pytest.mark.parametrize("on_battery, percent, threshold", [
    (True, 25, 20),  # above the threshold
    (False, 5, 20),  # low but charging
    (True, None, 20),  # a desktop Mac
    (True, 5, 0),  # pausing turned off
])
def test_no_pause(fake_mac, on_battery, percent, threshold):
    fake_mac.set_power(on_battery=on_battery, percent=percent)
    events = []
    assert machine.BatteryPause(threshold, None, events.append).wrap(never_stop)() is False
    assert events == []


def test_the_battery_is_asked_at_most_every_check_interval(fake_mac):
    wrapped = machine.BatteryPause(20, None, lambda e: None).wrap(never_stop)
    for _ in range(50):
        wrapped()
    assert len(fake_mac.records("pmset")) == 1


# -- notifications ------------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_notification_is_one_osascript_call_and_a_bell_on_a_terminal(fake_mac):
    terminal, pipe = _Terminal(), io.StringIO()
    machine.notify('run "svamp" finished', subtitle="svamp", bell=terminal)
    machine.notify("again", bell=pipe)
    scripts = fake_mac.notifications()
    assert scripts == [
        '-e display notification "run \\"svamp\\" finished" with title "mlx-distill" subtitle "svamp"',
        '-e display notification "again" with title "mlx-distill"',
    ]
    assert terminal.getvalue() == "\a" and pipe.getvalue() == ""


# -- memory and prefill -------------------------------------------------------------------------------

def _fake_metal(monkeypatch, recommended: int, total: int) -> None:
    # No Metal device here: MLX's report of one is faked.
    monkeypatch.setattr(mx, "device_info", lambda *a: {"device_name": "Apple M9", "memory_size": total,
                                                        "max_recommended_working_set_size": recommended})


@cpu_backend
def test_on_a_cpu_the_limit_is_the_memory_free_now_and_prefill_steps_are_mlx_lms():
    plan = machine.memory_plan()
    assert plan.recommended_bytes is None and plan.device == "cpu"
    assert plan.limit_bytes == plan.available_bytes > 0 and plan.reason == "the memory free now"
    assert machine.prefill_step_size(16) == 2048  # a CPU has no display watchdog


def test_on_metal_the_limit_is_the_recommended_working_set_at_most(monkeypatch):
    _fake_metal(monkeypatch, recommended=2 * 1000**2, total=16 * GB)
    plan = machine.memory_plan()
    assert plan.limit_bytes == 2 * 1000**2 and plan.total_bytes == 16 * GB
    assert plan.reason == "the GPU's recommended working set" and plan.device == "Apple M9 (Metal)"
    _fake_metal(monkeypatch, recommended=10**15, total=10**15)  # more than is free now
    assert machine.memory_plan().reason == "the memory free now"
    assert machine.memory_plan(limit_gb=3.5).limit_bytes == int(3.5 * GB)


def test_the_limit_is_set_within_the_block_and_restored_after():
    before = mx.get_memory_limit()
    plan = machine.memory_plan(limit_gb=1.25)
    with machine.memory_limit(plan):
        assert mx.get_memory_limit() == int(1.25 * GB)
        assert machine.model_memory_budget() <= int(1.25 * GB)
    assert mx.get_memory_limit() == before


def test_prefill_steps_are_bounded_by_the_device(monkeypatch):
    _fake_metal(monkeypatch, recommended=10 * GB, total=16 * GB)
    assert machine.prefill_step_size(16) == 128
    assert machine.prefill_step_size(1) == 2048
    assert machine.prefill_step_size(1000) == 64
    _fake_metal(monkeypatch, recommended=100 * GB, total=128 * GB)
    assert machine.prefill_step_size(16) == 512


# -- config and doctor --------------------------------------------------------------------------------

def _config(**run):
    return {"task": {"name": "svamp", "data": "x.json"}, "run": run}


def test_run_section_keys_are_read_and_checked():
    config = parse_config(_config(keep_awake=False, pause_below_battery=35, notify=False, memory_limit_gb=6,
                                  prefill_step_size=256))
    assert (config.run.keep_awake, config.run.pause_below_battery, config.run.notify) == (False, 35, False)
    assert config.run.memory_limit_gb == 6.0 and config.to_dict()["run"]["prefill_step_size"] == 256
    assert parse_config(_config()).run.pause_below_battery == 20
    for bad, words in [({"pause_below_battery": 120}, "percent from 0 to 100"),
                       ({"memory_limit_gb": -1}, "run.memory_limit_gb"),
                       ({"keep_awake": "no"}, "true or false"),
                       ({"sleep": True}, "unknown key 'run.sleep'")]:
        with pytest.raises(DistillError, match=words):
            parse_config(_config(**bad))


def _doctor(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "mlx_distill", "doctor"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@cpu_backend
def test_doctor_on_linux_says_once_that_the_laptop_side_does_nothing_here():
    out = _doctor({**os.environ, machine.FORCE_MACOS: "0"})
    assert out.count("not macOS") == 1
    assert "memory limit to" in out and "metal:   none" in out and "steps of 2048 tokens" in out
    assert "power:" not in out and "sleep:" not in out


def test_doctor_on_a_mac_on_battery(fake_mac):
    fake_mac.set_power(on_battery=True, percent=15)
    out = _doctor(fake_mac.env())
    assert "power:   on battery, 15%: on battery below 20% a run waits between batches" in out
    assert "sleep:   kept awake while a stage works" in out and "--allow-sleep" in out
    assert "notify:  a notification and the bell" in out
    assert fake_mac.assertions() == []  # doctor only looks
