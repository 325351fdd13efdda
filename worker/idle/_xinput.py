"""Linux X11: owner input as XInput2 raw events on the root window (an event source).

``XISelectEvents`` on the root window for ``XI_RawMotion``, ``XI_RawKeyPress``,
``XI_RawButtonPress`` (and raw touch) makes the X server send this connection
one event per input, whichever window has focus and even during grabs (XI
2.1+). The connection's file descriptor goes into the detector's ``select``:
quiet, it costs nothing; the first event wakes the detector.

Armed only while the owner is away: disarmed, the selection is emptied so the
server sends nothing while the owner types and moves the mouse. A connection
of its own (Xlib connections are not shared between threads). Needs libX11
and libXi (Debian: libx11-6, libxi6) and a server with XInput 2 (every
X.Org server since 1.10, Xvfb and XWayland included; under XWayland only
X11 clients' input is seen, so a Wayland desktop relies on the other probes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any

GENERIC_EVENT = 35
XI_ALL_MASTER_DEVICES = 1
XI_RAW_KEY_PRESS = 13
XI_RAW_BUTTON_PRESS = 15
XI_RAW_MOTION = 17
XI_RAW_TOUCH_BEGIN = 22
#: What counts as the owner: presses, motion, touch; releases follow a press anyway.
RAW_EVENTS = (XI_RAW_KEY_PRESS, XI_RAW_BUTTON_PRESS, XI_RAW_MOTION, XI_RAW_TOUCH_BEGIN)
MASK_BYTES = 4  # XIMaskLen(XI_LASTEVENT): events 0..31


class _XIEventMask(ctypes.Structure):
    _fields_ = [("deviceid", ctypes.c_int), ("mask_len", ctypes.c_int),
                ("mask", ctypes.POINTER(ctypes.c_ubyte))]


class _XGenericEventCookie(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("extension", ctypes.c_int),
                ("evtype", ctypes.c_int), ("cookie", ctypes.c_uint), ("data", ctypes.c_void_p)]


class _XEvent(ctypes.Union):
    _fields_ = [("type", ctypes.c_int), ("cookie", _XGenericEventCookie),
                ("pad", ctypes.c_long * 24)]


def raw_event_mask(events: tuple[int, ...] = RAW_EVENTS) -> bytes:
    """The XI2 event mask bytes selecting ``events`` (``XISetMask`` for each)."""
    mask = bytearray(MASK_BYTES)
    for event in events:
        mask[event >> 3] |= 1 << (event & 7)
    return bytes(mask)


_IO_EXIT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


def _load(name: str) -> Any:
    path = ctypes.util.find_library(name)
    return ctypes.CDLL(path) if path else None


def _bind(xlib: Any, xi: Any) -> None:
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xlib.XDefaultRootWindow.restype = ctypes.c_ulong
    xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xlib.XConnectionNumber.argtypes = [ctypes.c_void_p]
    xlib.XQueryExtension.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int)]
    xlib.XPending.argtypes = [ctypes.c_void_p]
    xlib.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.POINTER(_XEvent)]
    xlib.XFlush.argtypes = [ctypes.c_void_p]
    xlib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    xi.XIQueryVersion.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                  ctypes.POINTER(ctypes.c_int)]
    xi.XISelectEvents.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                  ctypes.POINTER(_XIEventMask), ctypes.c_int]


class XInputEvents:
    """An event source (:class:`worker.idle.wake.Source`) on ``display``'s raw input."""

    name = "xinput2"

    def __init__(self, xlib: Any, xi: Any, display: int, display_name: str) -> None:
        self._xlib, self._xi = xlib, xi
        self._display: int | None = display
        self.display_name = display_name
        self._root = xlib.XDefaultRootWindow(display)
        self._fd = xlib.XConnectionNumber(display)
        opcode, first_event, first_error = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        xlib.XQueryExtension(display, b"XInputExtension", ctypes.byref(opcode),
                             ctypes.byref(first_event), ctypes.byref(first_error))
        self.opcode = opcode.value
        self._event = _XEvent()
        self._broken = False
        self._on_io_exit = _IO_EXIT(self._io_exit)  # referenced: must outlive registration
        # libX11 >= 1.7 (checked by open): a lost server marks this source dead, not the process
        xlib.XSetIOErrorExitHandler.argtypes = [ctypes.c_void_p, _IO_EXIT, ctypes.c_void_p]
        xlib.XSetIOErrorExitHandler(display, self._on_io_exit, None)
        self.armed = False
        self._select(b"\0" * MASK_BYTES)
        self._xlib.XSync(display, 0)

    @classmethod
    def open(cls, display_name: str | None = None,
             load: Callable[[str], Any] = _load) -> XInputEvents | str:
        """The source, or a string saying why there is none."""
        name = display_name if display_name is not None else os.environ.get("DISPLAY", "")
        if not name:
            return "no DISPLAY set"
        xlib, xi = load("X11"), load("Xi")
        if xlib is None or xi is None:
            return "libX11 or libXi not installed"
        if not hasattr(xlib, "XSetIOErrorExitHandler"):
            return "libX11 older than 1.7: a lost X server would end the process"
        _bind(xlib, xi)
        from worker.idle import _linux  # the process-wide Xlib error handlers

        _linux.install_x_error_handlers(xlib)
        display = xlib.XOpenDisplay(name.encode())
        if not display:
            return f"cannot open display {name}"
        opcode, event, error = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        if not xlib.XQueryExtension(display, b"XInputExtension", ctypes.byref(opcode),
                                    ctypes.byref(event), ctypes.byref(error)):
            xlib.XCloseDisplay(display)
            return f"display {name} has no XInputExtension"
        major, minor = ctypes.c_int(2), ctypes.c_int(2)
        if xi.XIQueryVersion(display, ctypes.byref(major), ctypes.byref(minor)) != 0:
            xlib.XCloseDisplay(display)
            return f"display {name} has XInput {major.value}.{minor.value}, not 2"
        return cls(xlib, xi, display, name)

    def _io_exit(self, _display: Any, _data: Any) -> None:
        self._broken = True

    def _select(self, mask: bytes) -> None:
        buffer = (ctypes.c_ubyte * MASK_BYTES).from_buffer_copy(mask)
        event_mask = _XIEventMask(XI_ALL_MASTER_DEVICES, MASK_BYTES,
                                  ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ubyte)))
        self._xi.XISelectEvents(self._display, self._root, ctypes.byref(event_mask), 1)
        self._xlib.XFlush(self._display)

    def fileno(self) -> int:
        return self._fd

    def arm(self, on: bool) -> None:
        self._check()
        self._select(raw_event_mask() if on else b"\0" * MASK_BYTES)
        self.armed = on
        self._check()

    def drain(self) -> bool:
        """Every queued event read; True if one was a raw input event of this display."""
        self._check()
        seen = False
        xlib, event = self._xlib, self._event
        while xlib.XPending(self._display) > 0 and not self._broken:
            xlib.XNextEvent(self._display, ctypes.byref(event))
            if (event.type == GENERIC_EVENT and event.cookie.extension == self.opcode
                    and event.cookie.evtype in RAW_EVENTS):
                seen = True
        self._check()
        return seen and self.armed

    def _check(self) -> None:
        if self._broken or self._display is None:
            raise OSError(f"X connection to {self.display_name} lost")

    def close(self) -> None:
        if self._display is not None and not self._broken:
            self._xlib.XCloseDisplay(self._display)
        self._display = None
