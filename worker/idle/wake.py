"""Sleep until the owner does something, or a timeout: the detector's input-event sources.

Polling input idle time at 10 Hz costs a Python wake-up every 0.1 s and still
sees the owner up to 0.1 s late. Where the OS tells a process about input,
the detector instead sleeps in one ``select`` on every event source at once,
wakes within milliseconds of the owner's first event, and otherwise ticks
only at the slow interval.

A :class:`Source` is a file descriptor that turns readable when input may
have happened, plus ``drain()`` that reads what is pending without blocking
and says whether it was the owner. The backends (``_xinput``, ``_inotify``,
``_linux.LogindSignals``) open theirs; :func:`open_events` gathers them. A
source only reports input while armed (the owner away): while the owner is
present nothing urgent can happen, so the sources are not even waited on.

With no source at all (Windows, macOS, a Linux box without X11, readable
input devices or logind) :func:`open_events` gives an inactive :class:`Wake`
and the monitor polls as before; ``describe()`` says which it is and why
the others are missing, so a reading's details show it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from worker.idle.reading import Measure

log = logging.getLogger(__name__)


class Source(Protocol):
    """One OS mechanism that reports owner input through a file descriptor."""

    name: str

    def fileno(self) -> int: ...

    def arm(self, on: bool) -> None:
        """Watch (owner away) or stop watching (owner present; may cost the OS nothing)."""

    def drain(self) -> bool:
        """Read every pending event without blocking; True if one was owner input.

        Raises ``OSError`` when the source is dead (the X server went away):
        the source is then dropped.
        """

    def close(self) -> None: ...


class Wake:
    """Every event source at once, and a pipe that interrupts a wait (the loop's stop).

    Used from the detector's thread only, except :meth:`interrupt`.
    ``last_input`` is the monotonic time of the last owner event seen while
    armed; :meth:`input_idle` turns it into an input probe, so the tick that a
    wake-up causes reads "input 2 ms ago" even where the polled probes are
    coarse (device access times).
    """

    def __init__(self, sources: Sequence[Source], *, missing: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wait_readable: Callable[..., Any] = select.select) -> None:
        self.sources = list(sources)
        self.missing = list(missing)  # why each other mechanism is not used
        self.dropped: list[str] = []
        self._clock = clock
        self._select = wait_readable
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        os.set_blocking(self._write_end, False)
        self._closing = threading.Lock()  # interrupt() never writes to a reused descriptor
        self.armed = False
        self.last_input: float | None = None
        self.woken_by: str | None = None

    @property
    def name(self) -> str:
        """The sources of owner input or state (a preferences file only wakes the loop)."""
        return "+".join(source.name for source in self.sources
                        if _kind(source) != "settings") or "polling"

    @property
    def active(self) -> bool:
        """Whether the loop can sleep on events: a source of owner input or of the owner's
        state (the sensor file); a preferences file alone only wakes it."""
        return any(_kind(source) != "settings" for source in self.sources)

    def arm(self, on: bool) -> None:
        """Arm while the owner is away; disarming forgets input (it is not watched then)."""
        if on == self.armed:
            return
        for source in list(self.sources):
            self._guard(source, lambda s=source: s.arm(on))
        for source in list(self.sources):  # what queued while disarmed is old news
            self._guard(source, source.drain)
        self.armed = on
        self.last_input = None

    def wait(self, timeout: float) -> str | None:
        """Sleep up to ``timeout`` s; the name of the source that saw input, else None.

        Disarmed, only :meth:`interrupt` ends the wait early. Events already
        read into a library's queue (Xlib's) are checked first.
        """
        self.woken_by = None
        if self.armed:
            seen = self._drain_all(self.sources)
            if seen:
                return self._woken(seen)
        deadline = self._clock() + max(0.0, timeout)
        while self.sources:  # none left (every one died): the monitor falls back to polling
            watched = [source.fileno() for source in self.sources] if self.armed else []
            left = max(0.0, deadline - self._clock())
            try:
                ready, _, _ = self._select([self._read_end, *watched], [], [], left)
            except (OSError, ValueError) as exc:  # a source closed under us
                log.warning("input events: select failed (%s); checking each source", exc)
                ready = watched
            if self._read_end in ready:
                self._clear_interrupt()
                return None
            if ready:
                seen = self._drain_all([s for s in self.sources if s.fileno() in ready])
                if seen:
                    return self._woken(seen)
            if not ready or self._clock() >= deadline:
                return None

    def interrupt(self) -> None:
        """End a :meth:`wait` now (from any thread)."""
        with self._closing, contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            if self._write_end >= 0:
                os.write(self._write_end, b"x")

    def input_idle(self) -> Measure[float]:
        """Seconds since owner input seen armed; unknown while none was."""
        if self.last_input is None:
            why = ("no input event since the owner left" if self.armed
                   else "input events not watched while the owner is present")
            return Measure.missing(f"{self.name}: {why}", self.name)
        return Measure.of(max(0.0, self._clock() - self.last_input), self.name)

    def describe(self) -> dict[str, Any]:
        """What a reading's details say: event-driven or not, and why not elsewhere."""
        return {"input_events": self.name if self.sources else "none (polling)",
                "input_events_missing": self.missing + self.dropped}

    def close(self) -> None:
        for source in self.sources:
            _close(source)
        self.sources = []
        with self._closing:
            for fd in (self._read_end, self._write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._read_end = self._write_end = -1

    def _woken(self, source: Source) -> str:
        if _kind(source) == "input":  # a state or settings file is not the owner's hand
            self.last_input = self._clock()
        self.woken_by = source.name
        return source.name

    def _drain_all(self, sources: Iterable[Source]) -> Source | None:
        seen = None
        for source in list(sources):
            if self._guard(source, source.drain) and seen is None:
                seen = source
        return seen

    def _guard(self, source: Source, call: Callable[[], Any]) -> Any:
        """Run ``call``; a source that fails is closed and dropped, never retried."""
        try:
            return call()
        except Exception as exc:
            log.warning("input events: %s stopped (%s); %s", source.name, exc,
                        "polling input instead" if len(self.sources) == 1 else "others remain")
            self.dropped.append(f"{source.name}: stopped: {exc}")
            if source in self.sources:
                self.sources.remove(source)
            _close(source)
            return None

    def _clear_interrupt(self) -> None:
        try:
            while os.read(self._read_end, 512):
                pass
        except (BlockingIOError, OSError):
            pass


def _kind(source: Source) -> str:
    """``input`` (owner input: the default), ``state`` (the host's sensor file) or
    ``settings`` (the volunteer's preferences: a change is applied at once)."""
    return getattr(source, "kind", "input")


def _close(source: Source) -> None:
    try:
        source.close()
    except Exception as exc:  # closing is best effort
        log.debug("input events: closing %s failed: %s", source.name, exc)


def open_events(openers: Iterable[tuple[str, Callable[[], Source | str]]]) -> Wake:
    """Open each source (``opener`` gives it, or a string saying why not).

    The result is inactive (``active`` False: poll) when no source opened.
    """
    sources: list[Source] = []
    missing: list[str] = []
    for name, opener in openers:
        try:
            result = opener()
        except Exception as exc:  # an opener must never stop the detector
            result = f"failed: {exc}"
        if isinstance(result, str):
            missing.append(f"{name}: {result}")
        else:
            sources.append(result)
    wake = Wake(sources, missing=missing)
    if wake.active:
        log.info("input events: %s (event-driven)", wake.name)
    else:
        log.info("input events: none, polling input (%s)", "; ".join(missing) or "no mechanism")
    return wake
