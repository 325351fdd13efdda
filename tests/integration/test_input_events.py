"""XInput2 raw events on a real X server (Xvfb): XTest input wakes the detector.

XTest events go through the server's input path as a real device's do
(``xdotool mousemove`` warps the pointer instead, which is no input event).

Bounds are generous (2 s): these prove the mechanism; ``bench/detector.py``
measures its speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from worker.idle._xinput import XInputEvents
from worker.idle.wake import Wake

from .tools import require
from .waiting import wait_for

BOUND = 2.0


@pytest.fixture
def display():
    """A private Xvfb display's name."""
    for tool in ("Xvfb", "xdotool"):
        require(tool)
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "320x240x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    name = f":{number}"
    try:
        wait_for(lambda: not isinstance(XInputEvents.open(name), str), timeout=15, every=0.1)
        yield name, server
    finally:
        server.terminate()
        server.wait(10)


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, check=True,
                   timeout=10)


class XTestMouse:
    """Moves the pointer of a display with XTest fake motion, as a device would."""

    def __init__(self, display: str) -> None:
        if not ctypes.util.find_library("Xtst"):
            if os.environ.get("CI"):  # xdotool, which .ci/run installs, brings it
                pytest.fail("libXtst is missing: .ci/run installs xdotool, which needs it")
            pytest.skip("libXtst is not installed (Debian: libxtst6)")
        self.xlib = ctypes.CDLL(ctypes.util.find_library("X11"))
        self.xtst = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        self.xlib.XOpenDisplay.restype = ctypes.c_void_p
        self.xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.xlib.XFlush.argtypes = [ctypes.c_void_p]
        self.xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_int, ctypes.c_ulong]
        self.display = self.xlib.XOpenDisplay(display.encode())

    def move(self, x: int, y: int) -> None:
        self.xtst.XTestFakeMotionEvent(self.display, -1, x, y, 0)
        self.xlib.XFlush(self.display)

    def close(self) -> None:
        self.xlib.XCloseDisplay(self.display)


def test_an_xtest_mouse_motion_wakes_an_armed_wait(display):
    name, _server = display
    mouse = XTestMouse(name)
    wake = Wake([XInputEvents.open(name)])
    wake.arm(True)
    assert wake.wait(0.2) is None  # quiet: nothing wakes it
    threading.Timer(0.1, mouse.move, (100, 50)).start()
    started = time.monotonic()

    assert wake.wait(30) == "xinput2"
    assert time.monotonic() - started < BOUND
    assert wake.input_idle().known and wake.input_idle().source == "xinput2"
    wake.close()
    mouse.close()


def test_a_key_press_wakes_it_too_and_disarmed_input_does_not(display):
    name, _server = display
    wake = Wake([XInputEvents.open(name)])
    xdotool(name, "key", "b")  # the owner is present: nothing selected
    assert wake.wait(0.2) is None
    wake.arm(True)
    typing = threading.Timer(0.1, xdotool, (name, "key", "a"))
    typing.start()

    assert wake.wait(30) == "xinput2"
    typing.join(10)  # xdotool done before its server goes
    wake.close()


def test_an_x_server_that_goes_away_drops_the_source_not_the_process(display):
    name, server = display
    wake = Wake([XInputEvents.open(name)])
    wake.arm(True)
    server.terminate()
    server.wait(10)
    started = time.monotonic()

    assert wake.wait(30) is None
    assert time.monotonic() - started < BOUND and not wake.active
    assert "xinput2: stopped" in wake.describe()["input_events_missing"][0]
