"""CPU used by others: the whole machine minus the worker's own processes, averaged.

The average runs over a sliding window (default 20 s, after BOINC's
"held at least 20 s") so a short spike does not count as the owner; a heavy
load still shows within a few seconds. Until a second sample exists, the
one-minute load average stands in, so a fresh detector is never blind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import psutil

from worker.idle.processes import OwnProcesses
from worker.idle.reading import Measure


def busy_seconds(times: Any) -> float:
    """All CPU time that is not idle or waiting for I/O, summed over CPUs."""
    idle = getattr(times, "idle", 0.0) + getattr(times, "iowait", 0.0)
    return sum(times) - idle


class OthersCpu:
    def __init__(self, own: OwnProcesses, *, window: float,
                 cpu_times: Callable[[], Any] = psutil.cpu_times,
                 cpu_count: int | None = None,
                 load_average: Callable[[], tuple[float, ...]] = psutil.getloadavg) -> None:
        self.own = own
        self.window = window
        self._cpu_times = cpu_times
        self._load_average = load_average
        self._cpus = cpu_count or psutil.cpu_count() or 1
        self._own_total = 0.0
        self._samples: deque[tuple[float, float, float]] = deque()

    def measure(self, now: float) -> Measure[float]:
        self._own_total += self.own.cpu_delta()
        self._samples.append((now, busy_seconds(self._cpu_times()), self._own_total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        if len(self._samples) < 2:
            return self._first_guess()
        start, busy0, own0 = self._samples[0]
        span = now - start
        if span <= 0:
            return Measure.missing("no time between CPU samples", "cpu")
        _, busy1, own1 = self._samples[-1]
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (span * self._cpus) * 100.0
        return Measure.of(round(min(100.0, others), 1), f"cpu over {span:.0f} s")

    def _first_guess(self) -> Measure[float]:
        try:
            one_minute = self._load_average()[0]
        except (OSError, AttributeError) as exc:
            return Measure.missing(f"warming up, and no load average: {exc}", "cpu")
        return Measure.of(round(min(100.0, one_minute / self._cpus * 100.0), 1),
                          "1-minute load average")
