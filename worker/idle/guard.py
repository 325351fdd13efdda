"""Run a probe with a deadline so a hung probe never blocks the detector loop.

BOINC's client hung in ``XOpenDisplay``; here every probe that talks to
something outside the process (X11, D-Bus, NVML, a subprocess) runs on its
own daemon thread. A probe that overstays its deadline reads as unknown and
is not asked again until the stuck call returns. A probe that answered
"unknown" (no display, no session bus) is asked again only every
``retry_unknown`` seconds, so absent probes cost nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from worker.idle.reading import Measure


class Guarded:
    """``Guarded(name, probe, timeout=...)()`` returns ``probe()`` or an unknown Measure.

    ``timeout=None`` runs a quick local probe inline, with the same error and
    retry handling.
    """

    def __init__(self, name: str, probe: Callable[[], Measure[Any]], *,
                 timeout: float | None = 0.5,
                 retry_unknown: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.probe = probe
        self.timeout = timeout
        self.retry_unknown = retry_unknown
        self._clock = clock
        self._wake = threading.Event()
        self._done = threading.Event()
        self._busy_since: float | None = None
        self._result: Measure[Any] | None = None
        self._unknown: tuple[float, Measure[Any]] | None = None
        self._thread: threading.Thread | None = None

    def __call__(self) -> Measure[Any]:
        now = self._clock()
        if self._unknown and now - self._unknown[0] < self.retry_unknown:
            return self._unknown[1]
        if self.timeout is None:  # a quick local probe: no thread needed
            result = self._ask()
            self._unknown = None if result.known else (now, result)
            return result
        if self._busy_since is not None:
            if self._done.is_set():
                self._busy_since = None  # the stuck call came back; its answer is stale
            else:
                stuck = now - self._busy_since
                return Measure.missing(f"{self.name} probe stuck for {stuck:.1f} s", self.name)
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"probe-{self.name}",
                                            daemon=True)
            self._thread.start()
        self._busy_since = now
        self._done.clear()
        self._wake.set()
        if not self._done.wait(self.timeout):
            return Measure.missing(f"{self.name} probe timed out after {self.timeout:g} s",
                                   self.name)
        self._busy_since = None
        result = self._result or Measure.missing("no answer", self.name)
        self._unknown = None if result.known else (now, result)
        return result

    def _ask(self) -> Measure[Any]:
        try:
            return self.probe()
        except Exception as exc:  # a failing probe is an unknown reading, not a crash
            return Measure.missing(f"{self.name} probe failed: {exc}", self.name)

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._result = self._ask()
            self._done.set()
