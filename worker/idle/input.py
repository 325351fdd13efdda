"""Input idle time: the smallest answer of every probe the OS backend offers.

Any probe that saw recent input wins, so mouse-only activity seen by X11 or
Mutter counts even when a coarser probe says "idle for an hour".
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.idle.guard import Guarded
from worker.idle.reading import Measure


class InputIdle:
    def __init__(self, probes: Sequence[Guarded]) -> None:
        self.probes = probes

    def measure(self) -> Measure[float]:
        results = [probe() for probe in self.probes]
        known = [result for result in results if result.known]
        if known:
            return min(known, key=lambda result: result.value)  # type: ignore[arg-type, return-value]
        why = "; ".join(str(result.unknown) for result in results) or "no input probe on this OS"
        return Measure.missing(why, "input")
