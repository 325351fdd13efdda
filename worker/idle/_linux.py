"""Linux: input idle time and screen lock from logind, X11, GNOME/Mutter and device files.

Input probes, every one answering on its own, all combined by the front:
- systemd-logind ``IdleHint``/``IdleSinceHint`` of seat0's active session
  (system D-Bus). Set by the desktop after its own idle delay; a session that
  is not idle gives no idle time, so logind only ever says "idle since".
- X11 ``XScreenSaverQueryInfo`` through ctypes, when ``$DISPLAY`` is reachable:
  milliseconds since any keyboard or mouse event on that display.
- GNOME/Mutter ``IdleMonitor.GetIdletime`` on the session D-Bus (Wayland).
- The newest access time of ``/dev/input/event*`` and terminal devices
  (HTCondor's way). The kernel stamps a terminal's access time on input in
  8-second steps, so this fallback is coarse, and input devices are only
  readable by root or the ``input`` group.
Screen lock: logind ``LockedHint``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from worker.idle._common import Probe, seconds_since
from worker.idle.reading import Measure

LOGIND = "org.freedesktop.login1"
SEAT0 = "/org/freedesktop/login1/seat/seat0"
MUTTER = "org.gnome.Mutter.IdleMonitor"
MUTTER_PATH = "/org/gnome/Mutter/IdleMonitor/Core"
DEVICE_PATTERNS = ("/dev/input/event*", "/dev/tty[0-9]*", "/dev/pts/[0-9]*")
DBUS_TIMEOUT = 1.0
HEADER_MEMBER = 3  # jeepney.low_level.HeaderFields.member


# ---- logind -----------------------------------------------------------------

def parse_logind(props: dict[str, Any], now_wall: float) -> tuple[Measure[float], Measure[bool]]:
    """(input idle, screen locked) from a logind session's properties."""
    source = "logind"
    if "IdleHint" not in props:
        idle: Measure[float] = Measure.missing("logind session has no IdleHint", source)
    elif props["IdleHint"] and props.get("IdleSinceHint"):
        idle = Measure.of(seconds_since(props["IdleSinceHint"] / 1e6, now_wall), source)
    elif props["IdleHint"]:
        idle = Measure.missing("logind says idle but gives no time", source)
    else:
        idle = Measure.missing("logind: the desktop has not marked the session idle", source)
    if "LockedHint" in props:
        locked: Measure[bool] = Measure.of(bool(props["LockedHint"]), source)
    else:
        locked = Measure.missing("logind session has no LockedHint", source)
    return idle, locked


def _dbus_connection(bus: str) -> Any:
    from jeepney.io.blocking import open_dbus_connection

    return open_dbus_connection(bus=bus)


class Logind:
    """seat0's active session on the system bus, read at most every ``ttl`` seconds."""

    def __init__(self, connect: Callable[[str], Any] = _dbus_connection, ttl: float = 0.5) -> None:
        self._connect = connect
        self._ttl = ttl
        self._conn: Any = None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any] | str] | None = None

    def properties(self) -> dict[str, Any] | str:
        """The session's properties, or a string saying why there are none."""
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                result: dict[str, Any] | str = self._read()
            except Exception as exc:
                self._conn = None
                result = f"logind not reachable: {exc}"
            self._cached = (now, result)
            return result

    def _read(self) -> dict[str, Any] | str:
        from jeepney import DBusAddress, Properties

        if self._conn is None:
            self._conn = self._connect("SYSTEM")
        seat = DBusAddress(SEAT0, bus_name=LOGIND, interface="org.freedesktop.login1.Seat")
        reply = self._conn.send_and_get_reply(Properties(seat).get("ActiveSession"),
                                              timeout=DBUS_TIMEOUT)
        _sig, (session_id, path) = reply.body[0]
        if not session_id:
            return "logind: no active session on seat0"
        session = DBusAddress(path, bus_name=LOGIND, interface="org.freedesktop.login1.Session")
        reply = self._conn.send_and_get_reply(Properties(session).get_all(),
                                              timeout=DBUS_TIMEOUT)
        return {key: value for key, (_sig, value) in reply.body[0].items()}

    def input_idle(self) -> Measure[float]:
        props = self.properties()
        if isinstance(props, str):
            return Measure.missing(props, "logind")
        return parse_logind(props, time.time())[0]

    def screen_locked(self) -> Measure[bool]:
        props = self.properties()
        if isinstance(props, str):
            return Measure.missing(props, "logind")
        return parse_logind(props, time.time())[1]


def owner_back(changed: dict[str, Any], invalidated: list[str]) -> bool:
    """Whether a session's ``PropertiesChanged`` may mean the owner is back.

    The desktop clears ``IdleHint`` (and ``LockedHint`` on unlock) as soon as
    its owner returns; an invalidated hint is checked by the next tick.
    """
    values = {key: value for key, (_sig, value) in changed.items()}
    cleared = [key for key in ("IdleHint", "LockedHint") if key in values and not values[key]]
    return bool(cleared) or bool({"IdleHint", "LockedHint"} & set(invalidated))


class LogindSignals:
    """An event source (``worker.idle.wake.Source``): logind's session hints changing.

    A connection of its own to the system bus, subscribed to
    ``PropertiesChanged`` of seat0's active session: the desktop clears
    ``IdleHint`` when its owner returns. Coarse (only after the desktop's own
    idle delay was reached, and only where the desktop sets the hint) but
    free, and it covers Wayland sessions XInput2 cannot see.
    """

    name = "logind"

    def __init__(self, conn: Any, session_path: str) -> None:
        self._conn = conn
        self.session_path = session_path
        self.armed = False

    @classmethod
    def open(cls, connect: Callable[[str], Any] = _dbus_connection) -> LogindSignals | str:
        """The source, or a string saying why there is none."""
        from jeepney import DBusAddress, MatchRule, Properties, message_bus

        try:
            conn = connect("SYSTEM")
        except Exception as exc:
            return f"no system D-Bus: {exc}"
        try:
            seat = DBusAddress(SEAT0, bus_name=LOGIND, interface="org.freedesktop.login1.Seat")
            reply = conn.send_and_get_reply(Properties(seat).get("ActiveSession"),
                                            timeout=DBUS_TIMEOUT)
            _sig, (session_id, path) = reply.body[0]
            if not session_id:
                conn.close()
                return "no active session on seat0"
            rule = MatchRule(type="signal", interface="org.freedesktop.DBus.Properties",
                             member="PropertiesChanged", path=path)
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=DBUS_TIMEOUT)
        except Exception as exc:
            conn.close()
            return f"logind not reachable: {exc}"
        return cls(conn, path)

    def fileno(self) -> int:
        return int(self._conn.sock.fileno())

    def arm(self, on: bool) -> None:
        self.armed = on

    def drain(self) -> bool:
        seen = False
        while True:
            try:
                message = self._conn.receive(timeout=0)
            except TimeoutError:
                break
            body = message.body
            if (message.header.fields.get(HEADER_MEMBER) == "PropertiesChanged"
                    and len(body) == 3 and body[0] == "org.freedesktop.login1.Session"):
                seen = owner_back(body[1], body[2]) or seen
        return seen and self.armed

    def close(self) -> None:
        self._conn.close()


# ---- X11 --------------------------------------------------------------------

class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong),
                ("eventMask", ctypes.c_ulong)]


_X_IO_EXIT_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
# Process-wide Xlib handlers, kept alive for ever: the defaults end the process.
_X_ON_ERROR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(lambda _d, _e: 0)
_X_ON_IO_ERROR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(lambda _d: 0)


def install_x_error_handlers(xlib: Any) -> None:
    """Replace Xlib's process-ending default error handlers (every connection shares them)."""
    xlib.XSetErrorHandler(_X_ON_ERROR)
    if hasattr(xlib, "XSetIOErrorExitHandler"):  # libX11 >= 1.7: survivable
        xlib.XSetIOErrorHandler(_X_ON_IO_ERROR)


class X11:
    """``XScreenSaverQueryInfo`` on ``$DISPLAY``; the display stays open between calls.

    Xlib's default error handlers end the process; they are replaced so a
    display that goes away makes this probe unknown, not the worker dead.
    """

    def __init__(self, display: str | None = None, load: Callable[[str], Any] | None = None):
        self.display_name = display if display is not None else os.environ.get("DISPLAY", "")
        self._load = load or _load_library
        self._libs: tuple[Any, Any] | None = None
        self._display: int | None = None
        self._info: Any = None
        self._broken = False
        # Kept referenced: a ctypes callback must outlive its registration.
        self._on_io_exit = _X_IO_EXIT_HANDLER(self._io_exit)

    def _io_exit(self, _display: Any, _data: Any) -> None:
        self._broken = True

    def _open(self) -> str | None:
        if not self.display_name:
            return "no DISPLAY set"
        if self._libs is None:
            xlib, xss = self._load("X11"), self._load("Xss")
            if xlib is None or xss is None:
                return "libX11 or libXss not installed"
            xlib.XOpenDisplay.restype = ctypes.c_void_p
            xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
            xlib.XDefaultRootWindow.restype = ctypes.c_ulong
            xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
            xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
            install_x_error_handlers(xlib)
            xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
            xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                                  ctypes.POINTER(_XScreenSaverInfo)]
            self._libs = (xlib, xss)
        xlib, xss = self._libs
        display = xlib.XOpenDisplay(self.display_name.encode())
        if not display:
            return f"cannot open display {self.display_name}"
        if hasattr(xlib, "XSetIOErrorExitHandler"):  # libX11 >= 1.7
            xlib.XSetIOErrorExitHandler(ctypes.c_void_p(display), self._on_io_exit, None)
        self._display, self._info, self._broken = display, xss.XScreenSaverAllocInfo(), False
        return None

    def input_idle(self) -> Measure[float]:
        if self._display is None or self._broken:
            self._display = None
            why = self._open()
            if why:
                return Measure.missing(f"X11: {why}", "x11")
        assert self._libs is not None and self._display is not None
        xlib, xss = self._libs
        root = xlib.XDefaultRootWindow(self._display)
        if not xss.XScreenSaverQueryInfo(self._display, root, self._info) or self._broken:
            self._display = None
            return Measure.missing(f"X11: screen saver query failed on {self.display_name}", "x11")
        return Measure.of(self._info.contents.idle / 1000.0, "x11")


def _load_library(name: str) -> Any:
    path = ctypes.util.find_library(name)
    return ctypes.CDLL(path) if path else None


# ---- GNOME/Mutter (Wayland) ---------------------------------------------------

class Mutter:
    """GNOME's ``IdleMonitor.GetIdletime`` on the session bus (milliseconds)."""

    def __init__(self, connect: Callable[[str], Any] = _dbus_connection) -> None:
        self._connect = connect
        self._conn: Any = None

    def input_idle(self) -> Measure[float]:
        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and self._connect is _dbus_connection:
            return Measure.missing("Mutter: no session D-Bus", "mutter")
        from jeepney import DBusAddress, new_method_call

        try:
            if self._conn is None:
                self._conn = self._connect("SESSION")
            address = DBusAddress(MUTTER_PATH, bus_name=MUTTER, interface=MUTTER)
            reply = self._conn.send_and_get_reply(new_method_call(address, "GetIdletime"),
                                                  timeout=DBUS_TIMEOUT)
        except Exception as exc:
            self._conn = None
            return Measure.missing(f"Mutter idle monitor not reachable: {exc}", "mutter")
        if not reply.body or not isinstance(reply.body[0], int):
            return Measure.missing(f"Mutter answered {reply.body!r}", "mutter")
        return Measure.of(reply.body[0] / 1000.0, "mutter")


# ---- device files -------------------------------------------------------------

def device_idle(now_wall: float, patterns: Iterable[str] = DEVICE_PATTERNS,
                stat: Callable[[str], os.stat_result] = os.stat,
                expand: Callable[[str], list[str]] = glob.glob) -> Measure[float]:
    """Seconds since the newest access of an input device or terminal."""
    newest = newest_access([path for pattern in patterns for path in expand(pattern)], stat)
    return _since(newest, now_wall)


def newest_access(paths: Iterable[str],
                  stat: Callable[[str], os.stat_result] = os.stat) -> float | None:
    """The newest access time (epoch seconds) of the readable ``paths``, or None."""
    newest = None
    for path in paths:
        try:
            atime = stat(path).st_atime
        except OSError:
            continue
        newest = atime if newest is None else max(newest, atime)
    return newest


def _since(newest: float | None, now_wall: float) -> Measure[float]:
    if newest is None:
        return Measure.missing("no readable input devices or terminals", "devices")
    return Measure.of(seconds_since(newest, now_wall), "devices")


class Devices:
    """:func:`device_idle`, cheap enough for a 10 Hz loop.

    The device list is re-read every ``relist`` seconds (listing ``/dev``
    costs far more than a ``stat``; devices come and go rarely) and the
    devices are stat'ed at most every ``restat`` seconds: the kernel stamps a
    terminal's access time in 8-second steps, so asking more often learns
    nothing. Between stats the idle time is counted from the newest access
    seen, so it stays exact.
    """

    def __init__(self, patterns: Iterable[str] = DEVICE_PATTERNS, *, relist: float = 10.0,
                 restat: float = 1.0, stat: Callable[[str], os.stat_result] = os.stat,
                 expand: Callable[[str], list[str]] = glob.glob,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.patterns = tuple(patterns)
        self.relist = relist
        self.restat = restat
        self._stat = stat
        self._expand = expand
        self._clock = clock
        self._wall = wall
        self._paths: list[str] = []
        self._listed_at = -float("inf")
        self._stated_at = -float("inf")
        self._newest: float | None = None

    def input_idle(self) -> Measure[float]:
        now = self._clock()
        if now - self._listed_at >= self.relist:
            self._paths = [path for pattern in self.patterns for path in self._expand(pattern)]
            self._listed_at = now
            self._stated_at = -float("inf")  # new devices: look at them now
        if now - self._stated_at >= self.restat:
            self._newest = newest_access(self._paths, self._stat)
            self._stated_at = now
        return _since(self._newest, self._wall())


def children(pid: int, root: str = "/proc") -> list[int]:
    """Direct children of ``pid`` from ``/proc/PID/task/*/children`` (no full scan)."""
    found: list[int] = []
    tasks = f"{root}/{pid}/task"
    try:
        threads = os.listdir(tasks)
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"{tasks}/{thread}/children") as handle:
                found.extend(int(word) for word in handle.read().split())
        except (OSError, ValueError):
            continue
    return found


# ---- what the front asks for ---------------------------------------------------------

_LOGIND = Logind()


def input_probes() -> list[tuple[str, Probe, bool]]:
    """(name, probe, may block): blocking probes run on a guarded thread."""
    return [("logind", _LOGIND.input_idle, True), ("x11", X11().input_idle, True),
            ("mutter", Mutter().input_idle, True), ("devices", Devices().input_idle, False)]


def lock_probes() -> list[tuple[str, Probe, bool]]:
    return [("logind", _LOGIND.screen_locked, True)]


def input_event_openers() -> list[tuple[str, Callable[[], Any]]]:
    """The event sources to try (``worker.idle.wake``): each gives a source or why not."""
    from worker.idle._inotify import InotifyEvents
    from worker.idle._xinput import XInputEvents

    return [("xinput2", XInputEvents.open), ("inotify", InotifyEvents.open),
            ("logind", LogindSignals.open)]
