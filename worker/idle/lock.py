"""Screen lock: locked if any probe says so; unknown if none can tell."""

from __future__ import annotations

from collections.abc import Sequence

from worker.idle.guard import Guarded
from worker.idle.reading import Measure


class ScreenLock:
    def __init__(self, probes: Sequence[Guarded]) -> None:
        self.probes = probes

    def measure(self) -> Measure[bool]:
        results = [probe() for probe in self.probes]
        known = [result for result in results if result.known]
        for result in known:
            if result.value:
                return result
        if known:
            return known[0]
        why = "; ".join(str(result.unknown) for result in results) or "no lock probe on this OS"
        return Measure.missing(why, "lock")
