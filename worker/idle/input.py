"""Input idle time: the smallest answer of every probe the OS backend offers.

Any probe that saw recent input wins, so mouse-only activity seen by X11 or
Mutter counts even when a coarser probe says "idle for an hour".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from worker.idle.guard import Guarded
from worker.idle.reading import Measure

#: While input events are watched, the polled probes are asked only this often (seconds).
EVENT_REFRESH = 10.0


class InputIdle:
    """``events``: the event sources' own probe. While they are armed (the owner away),
    input wakes the loop by itself, so the polled probes (an X11 round trip on its
    guard thread, a D-Bus call) are asked only every ``refresh`` seconds and their
    last answer is carried forward in between (it grows by the time since); an event
    makes the events probe the smallest answer at once."""

    def __init__(self, probes: Sequence[Guarded], *, events: Guarded | None = None,
                 armed: Callable[[], bool] = lambda: False, refresh: float = EVENT_REFRESH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probes = probes
        self.events = events
        self._armed = armed
        self.refresh = refresh
        self._clock = clock
        self._polled: tuple[float, list[Measure[float]]] | None = None

    def _poll(self) -> list[Measure[float]]:
        now = self._clock()
        if self.events is None or not self._armed():
            self._polled = None
            return [probe() for probe in self.probes]
        if self._polled is None or now - self._polled[0] >= self.refresh:
            self._polled = (now, [probe() for probe in self.probes])
        at, results = self._polled
        age = now - at
        return [Measure.of(float(r.value) + age, r.source)  # type: ignore[arg-type]
                if r.known else r for r in results]

    def measure(self) -> Measure[float]:
        results = self._poll()
        if self.events is not None:
            results.append(self.events())
        known = [result for result in results if result.known]
        if known:
            return min(known, key=lambda result: result.value)  # type: ignore[arg-type, return-value]
        why = "; ".join(str(result.unknown) for result in results) or "no input probe on this OS"
        return Measure.missing(why, "input")
