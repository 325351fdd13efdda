"""macOS: input idle time from IOHIDSystem's ``HIDIdleTime``, screen lock from the console session.

Both come from ``ioreg`` (a subprocess with a short timeout): ``HIDIdleTime``
is nanoseconds since the last keyboard, mouse or trackpad event;
``CGSSessionScreenIsLocked`` in the console user's ``IOConsoleUsers`` entry
says whether the screen is locked.
"""

from __future__ import annotations

import plistlib
import re
import subprocess
from collections.abc import Callable
from typing import Any

from worker.idle._common import Probe
from worker.idle.reading import Measure

IOREG_TIMEOUT = 2.0
_IDLE = re.compile(rb'"HIDIdleTime"\s*=\s*(\d+)')

Run = Callable[[list[str]], bytes]


def _ioreg(args: list[str]) -> bytes:
    return subprocess.run(["/usr/sbin/ioreg", *args], capture_output=True, check=True,  # noqa: S603
                          timeout=IOREG_TIMEOUT).stdout


def parse_hid_idle(output: bytes) -> Measure[float]:
    found = _IDLE.search(output)
    if not found:
        return Measure.missing("ioreg shows no HIDIdleTime", "HIDIdleTime")
    return Measure.of(int(found.group(1)) / 1e9, "HIDIdleTime")


def parse_console_lock(output: bytes) -> Measure[bool]:
    try:
        root = plistlib.loads(output)
    except Exception as exc:
        return Measure.missing(f"ioreg output is not a property list: {exc}", "IOConsoleUsers")
    if isinstance(root, list):
        root = root[0] if root else {}
    users = root.get("IOConsoleUsers") or []
    console = [user for user in users if user.get("kCGSSessionOnConsoleKey")]
    if not console:
        return Measure.missing("no user session on the console", "IOConsoleUsers")
    return Measure.of(bool(console[0].get("CGSSessionScreenIsLocked", False)), "IOConsoleUsers")


def input_idle(run: Run = _ioreg) -> Measure[float]:
    try:
        return parse_hid_idle(run(["-c", "IOHIDSystem", "-d", "4", "-r", "-k", "HIDIdleTime"]))
    except (OSError, subprocess.SubprocessError) as exc:
        return Measure.missing(f"ioreg failed: {exc}", "HIDIdleTime")


def screen_locked(run: Run = _ioreg) -> Measure[bool]:
    try:
        return parse_console_lock(run(["-n", "Root", "-d1", "-a"]))
    except (OSError, subprocess.SubprocessError) as exc:
        return Measure.missing(f"ioreg failed: {exc}", "IOConsoleUsers")


def input_probes() -> list[tuple[str, Probe, bool]]:
    """(name, probe, may block): ioreg runs with its own timeout."""
    return [("HIDIdleTime", input_idle, False)]


def lock_probes() -> list[tuple[str, Probe, bool]]:
    return [("IOConsoleUsers", screen_locked, False)]


def input_event_openers() -> list[tuple[str, Callable[[], Any]]]:
    """No input-event source on macOS yet: the detector polls ``HIDIdleTime``.

    What would do it: a listen-only ``CGEventTap`` (needs the Input
    Monitoring permission, granted by the volunteer in System Settings) or
    IOKit HID value callbacks, both on a ``CFRunLoop`` thread that writes to
    a pipe the detector selects on.
    """
    return [("event tap", lambda: "not built on macOS: input is polled")]
