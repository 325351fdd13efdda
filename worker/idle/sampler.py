"""Turn the signals into one timestamped :class:`Reading`, each signal at its own pace.

Input (and the host file) is checked every ``poll_interval`` (0.1 s) so the
owner's return is seen at once, or at every tick where input events wake the
loop (:mod:`worker.idle.wake`); CPU, GPU, memory and lock every
``sample_interval`` (1 s); exclusive programs every 5 and the battery every 10
intervals. Between refreshes a signal keeps its last value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.idle import battery, hostfile
from worker.idle.reading import Measure, Reading
from worker.idle.wake import Wake


@dataclass
class Signal:
    """A named measurement taken at most every ``period`` seconds."""

    name: str
    measure: Callable[[float], Measure[Any]]
    period: float
    last: Measure[Any] | None = None
    taken_at: float = field(default=-float("inf"))

    def refresh(self, now: float) -> Measure[Any]:
        # 1 % slack: a loop ticking at exactly ``period`` must not skip every other tick.
        if self.last is None or now - self.taken_at >= 0.99 * self.period:
            self.last, self.taken_at = self.measure(now), now
        return self.last


class Sampler:
    """Reads local signals; ``read()`` returns a fresh :class:`Reading`.

    ``events``, when set, are the input-event sources a monitor built on this
    sampler sleeps on (:mod:`worker.idle.wake`).
    """

    def __init__(self, signals: list[Signal], *, details: Callable[[], dict[str, Any]] = dict,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, events: Wake | None = None) -> None:
        self.signals = signals
        self.events = events  # input-event sources the monitor waits on (worker.idle.wake)
        self._details = details
        self._clock = clock
        self._wall = wall

    def read(self) -> Reading:
        now = self._clock()
        values = {signal.name: signal.refresh(now) for signal in self.signals}
        return Reading(at=now, wall=self._wall(), details=self._details(), **values)


class FileSampler:
    """Reads the host's sensor file instead of local signals (a worker in a container)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, events: Wake | None = None) -> None:
        self.path = Path(path)
        self._clock = clock
        self._wall = wall
        self.events = events  # the file's replacement wakes the monitor (worker.idle.wake)

    def read(self) -> Reading:
        wall = self._wall()
        return Reading(at=self._clock(), wall=wall, host=hostfile.read(self.path, wall),
                       details={"sensor_file": str(self.path)})


def battery_signal(period: float) -> Signal:
    return Signal("battery", lambda _now: battery.measure(), period)
