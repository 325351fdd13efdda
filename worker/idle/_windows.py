"""Windows: input idle time from ``GetLastInputInfo``, screen lock from the input desktop.

``GetLastInputInfo`` sees only the session it runs in. A worker running as a
service (session 0) cannot see the owner's keyboard and mouse, so there the
input signal is unknown: run the sensor in the owner's session (the Task
Scheduler definition in ``deploy/`` does) and give the worker its file.
The lock check opens the input desktop: when the screen is locked it is the
secure (Winlogon) desktop, which a user process cannot open.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from worker.idle._common import Probe
from worker.idle.reading import Measure

DESKTOP_SWITCHDESKTOP = 0x0100
UOI_NAME = 2


class LASTINPUTINFO(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]


def _dlls() -> tuple[Any, Any]:
    windll = ctypes.windll  # type: ignore[attr-defined]
    return windll.user32, windll.kernel32


def input_idle(user32: Any = None, kernel32: Any = None) -> Measure[float]:
    if user32 is None or kernel32 is None:
        user32, kernel32 = _dlls()
    session = ctypes.c_uint(0)
    if kernel32.ProcessIdToSessionId(kernel32.GetCurrentProcessId(), ctypes.byref(session)) \
            and session.value == 0:
        return Measure.missing("running in session 0 (a service): the owner's input is "
                               "not visible; run the sensor in the owner's session",
                               "GetLastInputInfo")
    info = LASTINPUTINFO()
    info.cbSize = ctypes.sizeof(LASTINPUTINFO)
    if not user32.GetLastInputInfo(ctypes.byref(info)):
        return Measure.missing("GetLastInputInfo failed", "GetLastInputInfo")
    # Both are 32-bit millisecond tick counts that wrap every 49.7 days.
    elapsed_ms = (kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF
    return Measure.of(elapsed_ms / 1000.0, "GetLastInputInfo")


def screen_locked(user32: Any = None) -> Measure[bool]:
    if user32 is None:
        user32, _ = _dlls()
    desktop = user32.OpenInputDesktop(0, False, DESKTOP_SWITCHDESKTOP)
    if not desktop:
        return Measure.of(True, "input desktop")  # the secure desktop is showing
    try:
        name = ctypes.create_unicode_buffer(256)
        needed = ctypes.c_uint(0)
        if not user32.GetUserObjectInformationW(desktop, UOI_NAME, name, ctypes.sizeof(name),
                                                ctypes.byref(needed)):
            return Measure.missing("cannot read the input desktop's name", "input desktop")
        return Measure.of(name.value.lower() != "default", "input desktop")
    finally:
        user32.CloseDesktop(desktop)


def input_probes() -> list[tuple[str, Probe, bool]]:
    """(name, probe, may block): both are quick local calls."""
    return [("GetLastInputInfo", input_idle, False)]


def lock_probes() -> list[tuple[str, Probe, bool]]:
    return [("input desktop", screen_locked, False)]


def input_event_openers() -> list[tuple[str, Callable[[], Any]]]:
    """No input-event source on Windows yet: the detector polls ``GetLastInputInfo``.

    What would do it: a message-only window registered for raw input with
    ``RegisterRawInputDevices(RIDEV_INPUTSINK)`` (WM_INPUT for every key and
    motion, in the owner's session only), its message loop woken through a
    handle rather than ``select`` (which takes only sockets on Windows).
    """
    return [("raw input", lambda: "not built on Windows: input is polled")]
