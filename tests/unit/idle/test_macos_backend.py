"""macOS backend against captured-style ``ioreg`` output."""

from __future__ import annotations

import plistlib
import subprocess

from worker.idle import _macos

IOREG_HID = b'''+-o IOHIDSystem  <class IOHIDSystem, id 0x100000abc, registered, matched, active>
    {
      "HIDIdleTime" = 1234567890
      "HIDParameters" = {"HIDMouseAcceleration"=45056}
    }
'''


def console(locked: bool | None, on_console: bool = True) -> bytes:
    user = {"kCGSSessionOnConsoleKey": on_console, "kCGSSessionUserNameKey": "owner"}
    if locked is not None:
        user["CGSSessionScreenIsLocked"] = locked
    return plistlib.dumps({"IOConsoleUsers": [user]})


def test_hid_idle_time_is_nanoseconds():
    measure = _macos.input_idle(run=lambda _args: IOREG_HID)

    assert measure.value == 1.23456789 and measure.source == "HIDIdleTime"


def test_missing_hid_idle_time_or_failing_ioreg_is_unknown():
    assert not _macos.input_idle(run=lambda _args: b"nothing here").known

    def timeout(_args):
        raise subprocess.TimeoutExpired("ioreg", 2)

    assert "ioreg failed" in _macos.input_idle(run=timeout).unknown


def test_console_lock_from_ioconsoleusers():
    assert _macos.screen_locked(run=lambda _a: console(True)).value is True
    assert _macos.screen_locked(run=lambda _a: console(None)).value is False
    assert not _macos.screen_locked(run=lambda _a: console(True, on_console=False)).known
    assert not _macos.screen_locked(run=lambda _a: b"not a plist").known
