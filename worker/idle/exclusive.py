"""Exclusive programs: while one runs (a game, a video call, a render tool), the owner is busy."""

from __future__ import annotations

from collections.abc import Iterable

from worker.idle.processes import OwnProcesses, ProcessCatalog
from worker.idle.reading import Measure


def normalize(name: str) -> str:
    """Compare names case-insensitively and without a Windows ``.exe``."""
    name = name.strip().lower()
    return name.removesuffix(".exe")


class ExclusivePrograms:
    def __init__(self, names: Iterable[str], catalog: ProcessCatalog, own: OwnProcesses) -> None:
        self.names = frozenset(normalize(name) for name in names if name.strip())
        self.catalog = catalog
        self.own = own

    def measure(self) -> Measure[tuple[str, ...]]:
        """Refreshes the shared process catalogue too (own UIDs are found through it)."""
        try:
            self.catalog.refresh()
            own = self.own.pids()
        except Exception as exc:
            return Measure.missing(f"cannot list processes: {exc}", "processes")
        running = {normalize(info.name) for pid, info in self.catalog.known.items()
                   if pid not in own}
        return Measure.of(tuple(sorted(running & self.names)), "processes")
