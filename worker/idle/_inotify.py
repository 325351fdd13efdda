"""Linux: owner input as inotify events on ``/dev/input/event*`` (an event source).

Whoever shows the desktop (X.Org, a Wayland compositor, the console) reads
each input device as events arrive, and every read raises ``IN_ACCESS`` on
the device file: an inotify descriptor in the detector's ``select`` wakes at
the owner's first key or motion, whatever the display server, and costs
nothing while quiet. ``inotify_add_watch`` needs read permission on the
device, so this works for root and the ``input`` group only (the host
sensor's unit may grant it), never for a plain user. The directory is
watched too, so a device plugged in later is watched from then on.

While the owner is present the watches stay, and the kernel folds repeated
identical events into one, so the queue stays a few events long; arming
drains it (old news).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import struct
from collections.abc import Callable
from typing import Any

IN_ACCESS = 0x001
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CREATE = 0x100
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
DEVICE_MASK = IN_ACCESS | IN_MODIFY
DIRECTORY_MASK = IN_CREATE | IN_ATTRIB
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
INPUT_DIRECTORY = "/dev/input"
DEVICE_PATTERN = "event*"


def parse_events(data: bytes) -> list[tuple[int, int, str]]:
    """``(wd, mask, name)`` of every ``struct inotify_event`` in ``data``."""
    events, offset = [], 0
    while offset + HEADER.size <= len(data):
        wd, mask, _cookie, length = HEADER.unpack_from(data, offset)
        raw = data[offset + HEADER.size: offset + HEADER.size + length]
        events.append((wd, mask, raw.split(b"\0", 1)[0].decode(errors="replace")))
        offset += HEADER.size + length
    return events


def read_pending(fd: int) -> list[tuple[int, int, str]]:
    """Every event queued on the non-blocking inotify descriptor ``fd``, without waiting."""
    events: list[tuple[int, int, str]] = []
    while True:
        try:
            data = os.read(fd, 64 * 1024)
        except BlockingIOError:
            return events
        if not data:
            raise OSError("inotify descriptor closed")
        events += parse_events(data)


class _Libc:
    """The three inotify calls, through ctypes (the standard library has none)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._init, self._add, self._rm = (libc.inotify_init1, libc.inotify_add_watch,
                                           libc.inotify_rm_watch)
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

    def _checked(self, result: int, what: str) -> int:
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")
        return result

    def init(self) -> int:
        return self._checked(self._init(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, fd: int, path: str, mask: int) -> int:
        return self._checked(self._add(fd, os.fsencode(path), mask), f"inotify_add_watch {path}")


class InotifyEvents:
    """An event source (:class:`worker.idle.wake.Source`) on the input device files."""

    name = "inotify"

    def __init__(self, directory: str = INPUT_DIRECTORY, pattern: str = DEVICE_PATTERN, *,
                 libc: Any = None, listdir: Callable[[str], list[str]] = os.listdir) -> None:
        self.directory = directory
        self.pattern = pattern
        self._libc = libc or _Libc()
        self._listdir = listdir
        self._fd = self._libc.init()
        self.devices: dict[int, str] = {}  # watch descriptor -> device path
        self.refused: dict[str, str] = {}  # device path -> why it is not watched
        self.armed = False
        try:
            self._directory_wd = self._libc.add_watch(self._fd, directory, DIRECTORY_MASK)
            for entry in sorted(self._listdir(directory)):
                self._watch(entry)
        except OSError:
            os.close(self._fd)
            raise

    @classmethod
    def open(cls, directory: str = INPUT_DIRECTORY,
             pattern: str = DEVICE_PATTERN) -> InotifyEvents | str:
        """The source, or a string saying why there is none."""
        if not os.path.isdir(directory):
            return f"no {directory}"
        try:
            source = cls(directory, pattern)
        except OSError as exc:
            return f"cannot watch {directory}: {exc}"
        if not source.devices:
            source.close()
            why = "; ".join(sorted(set(source.refused.values()))) or "no devices"
            return f"no readable {directory}/{pattern} ({why}; needs root or the input group)"
        return source

    def _watch(self, entry: str) -> None:
        if not fnmatch.fnmatch(entry, self.pattern):
            return
        path = os.path.join(self.directory, entry)
        if path in self.devices.values():
            return
        try:
            self.devices[self._libc.add_watch(self._fd, path, DEVICE_MASK)] = path
            self.refused.pop(path, None)
        except OSError as exc:
            self.refused[path] = exc.strerror or str(exc)

    def fileno(self) -> int:
        return self._fd

    def arm(self, on: bool) -> None:
        self.armed = on

    def drain(self) -> bool:
        """Every queued event read; True if a watched device was read or written."""
        seen = False
        for wd, mask, name in read_pending(self._fd):
            if wd == self._directory_wd and mask & (IN_CREATE | IN_ATTRIB) and name:
                self._watch(name)  # a device plugged in, or its permissions changed
            elif mask & IN_IGNORED:
                self.devices.pop(wd, None)  # unplugged
            elif (wd in self.devices and mask & DEVICE_MASK) or mask & IN_Q_OVERFLOW:
                seen = True
        return seen and self.armed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
FILE_MASK = IN_CLOSE_WRITE | IN_MOVED_TO


class FileEvents:
    """An event source on one file, replaced by rename (the host's sensor file, or the
    volunteer's preferences: ``kind`` "settings", so an edit applies at once).

    A worker in a container reads the owner's state from the file the host
    sensor writes (``worker/idle/hostfile.py``: a temporary file renamed over
    it). Its folder is watched: the rename raises ``IN_MOVED_TO`` with the
    file's name, so the worker re-reads the file the moment the sensor wrote
    "busy" instead of at its next poll. A bind mount into a container is the
    same inode on the same kernel, so this works there too (not on a Docker
    Desktop VM share, where the worker polls as before).
    """

    def __init__(self, path: str, *, name: str = "sensor-file", kind: str = "state",
                 libc: Any = None) -> None:
        self.path = path
        self.name = name
        self.kind = kind  # worker.idle.wake: a file is never owner input
        self.directory, self.filename = os.path.split(os.path.abspath(path))
        self._libc = libc or _Libc()
        self._fd = self._libc.init()
        self.armed = False
        try:
            self._wd = self._libc.add_watch(self._fd, self.directory, FILE_MASK)
        except OSError:
            os.close(self._fd)
            raise

    @classmethod
    def open(cls, path: str, *, name: str = "sensor-file",
             kind: str = "state") -> FileEvents | str:
        """The source, or a string saying why there is none."""
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return f"no folder for {path}"
        try:
            return cls(path, name=name, kind=kind)
        except OSError as exc:
            return f"cannot watch {path}: {exc}"

    def fileno(self) -> int:
        return self._fd

    def arm(self, on: bool) -> None:
        self.armed = on

    def drain(self) -> bool:
        """Every queued event read; True if the file was replaced or written while armed."""
        seen = False
        for wd, mask, name in read_pending(self._fd):
            if (wd == self._wd and name == self.filename and mask & FILE_MASK) \
                    or mask & IN_Q_OVERFLOW:
                seen = True
        return seen and self.armed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
