"""Memory used by others: used RAM minus the worker's own resident memory, in percent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from worker.idle.processes import OwnProcesses
from worker.idle.reading import Measure


class OthersMemory:
    def __init__(self, own: OwnProcesses,
                 virtual_memory: Callable[[], Any] = psutil.virtual_memory) -> None:
        self.own = own
        self._virtual_memory = virtual_memory

    def measure(self) -> Measure[float]:
        memory = self._virtual_memory()
        if not memory.total:
            return Measure.missing("total memory reads as zero", "memory")
        used = memory.total - memory.available - self.own.rss()
        return Measure.of(round(max(0.0, used) / memory.total * 100.0, 1), "memory")
