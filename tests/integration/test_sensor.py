"""`idle-accel sensor` as a process, and the Linux input probes that work on this machine, for real.

X11 runs on a private Xvfb display and is driven with xdotool (mouse only);
terminal input goes through a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.idle import hostfile
from worker.idle._linux import X11, device_idle
from worker.local.worker_process import cli_command

from .tools import require
from .waiting import wait_for

SIGNALS = {"input_idle", "screen_locked", "others_cpu", "others_gpu", "others_memory",
           "battery", "exclusive"}
#: Neutralise the signals this shared machine cannot promise, to watch one at a time.
QUIET = {"IDLE_ACCEL_CPU_BUSY_PERCENT": "100", "IDLE_ACCEL_MEMORY_BUSY_PERCENT": "100",
         "IDLE_ACCEL_EXCLUSIVE_PROGRAMS": ""}


def sensor(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen[str]:
    return subprocess.Popen([*cli_command(), "sensor", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def once(env: dict[str, str] | None = None) -> dict:
    process = sensor("--once", "--json", env=env)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return json.loads(out)



def test_once_json_is_one_snapshot_of_every_signal():
    snapshot = once()

    assert snapshot["state"] in ("idle", "busy")
    assert set(snapshot["signals"]) == SIGNALS
    for name, measure in snapshot["signals"].items():
        assert ("value" in measure) != ("unknown" in measure), name
    assert abs(snapshot["at"] - time.time()) < 30
    assert all(set(reason) == {"code", "message"} for reason in snapshot["reasons"])
    assert (snapshot["state"] == "busy") == bool(snapshot["reasons"])


def test_an_exclusive_program_makes_the_owner_busy():
    program = subprocess.Popen(["sleep", "60"])
    try:
        snapshot = once({**QUIET, "IDLE_ACCEL_EXCLUSIVE_PROGRAMS": "steam,sleep"})
    finally:
        program.kill()
        program.wait()

    assert snapshot["state"] == "busy"
    assert {"code": "exclusive", "message": "exclusive program: sleep"} in snapshot["reasons"]
    assert "sleep" in snapshot["signals"]["exclusive"]["value"]


def test_out_keeps_the_file_current_and_marks_it_busy_on_sigterm(tmp_path):
    path = tmp_path / "run" / "state"
    process = sensor("--out", str(path),
                     env={"IDLE_ACCEL_PREFERENCES": str(tmp_path / "none.toml")})
    try:
        first = wait_for(lambda: path.exists() and json.loads(path.read_text()))
        later = wait_for(lambda: json.loads(path.read_text())["at"] > first["at"] + 1.5, 10)
        assert hostfile.read(path).value.problem is None
        assert first["state"] in ("idle", "busy") and "idle_seconds" in first
        assert later
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)

    assert process.returncode == 0
    final = json.loads(path.read_text())
    assert final["state"] == "busy"
    assert final["reasons"][0]["code"] == "sensor_stopped"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state"]


def test_the_sensor_obeys_the_preferences_and_keeps_a_copy_for_the_container(tmp_path):
    prefs = tmp_path / "preferences.toml"
    prefs.write_text("[when]\nidle_after = 0\n")
    path = tmp_path / "run" / "state"
    process = sensor("--out", str(path), env={**QUIET, "IDLE_ACCEL_PREFERENCES": str(prefs),
                                              "IDLE_ACCEL_REQUIRE_INPUT": "false"})
    copy = path.parent / "preferences.toml"
    try:
        wait_for(lambda: path.exists() and json.loads(path.read_text())["state"] == "idle", 20)
        assert copy.read_text() == prefs.read_text() and copy.stat().st_mode & 0o044 == 0o044
        prefs.write_text("[when]\nidle_after = 0\npaused = true\n")
        paused = wait_for(lambda: json.loads(path.read_text())["state"] == "busy"
                          and json.loads(path.read_text()), 10)
        assert paused["reasons"][0]["code"] == "paused"
        wait_for(lambda: "paused = true" in copy.read_text(), 10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)


def test_terminal_input_moves_the_device_probe_for_real():
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        long_ago = time.time() - 1000
        os.utime(name, (long_ago, long_ago))
        before = device_idle(time.time(), patterns=[name])
        os.write(master, b"owner types\n")
        assert os.read(slave, 64) == b"owner types\n"
        after = device_idle(time.time(), patterns=[name])
    finally:
        os.close(master)
        os.close(slave)

    assert before.value >= 999
    assert after.value < 9  # the kernel stamps terminal input in 8-second steps


@dataclass
class XDisplay:
    name: str
    server: subprocess.Popen[bytes]


@pytest.fixture
def display():
    """A private Xvfb display, with xdotool to move its mouse."""
    for tool in ("Xvfb", "xdotool"):
        require(tool)
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "320x240x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    name = f":{number}"
    try:
        wait_for(lambda: X11(name).input_idle().known, timeout=15, every=0.1)
        yield XDisplay(name, server)
    finally:
        server.terminate()
        server.wait(10)


def move_mouse(display: XDisplay, x: int) -> None:
    subprocess.run(["xdotool", "mousemove", str(x), "50"],
                   env={**os.environ, "DISPLAY": display.name},
                   check=True, timeout=10)


def test_x11_sees_mouse_only_activity(display):
    probe = X11(display.name)
    time.sleep(1.2)
    before = probe.input_idle()
    move_mouse(display, 100)
    after = probe.input_idle()

    assert before.value >= 1.0 and before.source == "x11"
    assert after.value < 0.5


def test_x11_display_that_goes_away_is_unknown_not_fatal(display):
    probe = X11(display.name)
    assert probe.input_idle().known
    display.server.terminate()
    display.server.wait(10)

    assert not probe.input_idle().known  # and this process is still here to say so
    assert not X11("").input_idle().known


def test_sensor_file_turns_busy_when_the_mouse_moves(display, tmp_path):
    path = tmp_path / "state"
    env = {**QUIET, "DISPLAY": display.name, "IDLE_ACCEL_IDLE_AFTER": "1"}
    process = sensor("--out", str(path), env=env)
    try:
        wait_for(lambda: path.exists() and json.loads(path.read_text())["state"] == "idle", 20)
        # A click: input through XTest, as a device's. (A pointer warp, what ``xdotool
        # mousemove`` does, is no input event: only the next tick, 2 s on, would see it.)
        subprocess.run(["xdotool", "click", "1"], env={**os.environ, "DISPLAY": display.name},
                       check=True, timeout=10)
        moved = time.monotonic()
        busy = wait_for(lambda: (doc := json.loads(path.read_text()))["state"] == "busy" and doc)
        noticed = time.monotonic() - moved
        wait_for(lambda: json.loads(path.read_text())["state"] == "idle", 20)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)

    assert busy["signals"]["input_idle"]["source"] in {"x11", "xinput2"}
    assert busy["details"]["input_events"] == "xinput2"  # woken by the event, not polled
    assert busy["reasons"][0]["code"] == "input"
    assert noticed < 5  # generous: the figure that matters is in bench/
    assert "owner busy: input" in err and "owner idle" in err
