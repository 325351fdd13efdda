"""The worker's own processes, and a cheap catalogue of everyone else's.

The detector must never mistake the worker's tasks for the owner (HTCondor's
NonCondorLoadAvg). "Own" is the process tree under the worker (or sensor)
and, for a host-side sensor, every process of the worker's user IDs: a
container's fixed UID (10001) as the host sees it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from worker.idle import backend


@dataclass(frozen=True)
class ProcInfo:
    name: str
    uid: int | None
    created: float


def _info(pid: int) -> ProcInfo | None:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            uid = process.uids().real if hasattr(process, "uids") else None
            return ProcInfo(process.name(), uid, process.create_time())
    except (psutil.Error, OSError):
        return None


class ProcessCatalog:
    """Name, user and start time of every process, refreshed incrementally.

    Each refresh lists the PIDs and reads only the new ones, so it stays cheap
    on a desktop with hundreds of processes.
    """

    def __init__(self, pids: Callable[[], Iterable[int]] = psutil.pids,
                 info: Callable[[int], ProcInfo | None] = _info) -> None:
        self._pids = pids
        self._info = info
        self.known: dict[int, ProcInfo] = {}

    def refresh(self) -> None:
        current = set(self._pids())
        for gone in self.known.keys() - current:
            del self.known[gone]
        for pid in current - self.known.keys():
            found = self._info(pid)
            if found is not None:
                self.known[pid] = found

    def pids_of_uids(self, uids: Iterable[int]) -> set[int]:
        wanted = set(uids)
        return {pid for pid, info in self.known.items() if info.uid in wanted}


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the OS backend's cheap way where it has one)."""
    if hasattr(backend.current, "children"):
        return backend.current.children(pid)
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(CPU seconds including reaped children, start time) of ``pid``."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        return (times.user + times.system + times.children_user + times.children_system,
                process.create_time())
    except (psutil.Error, OSError):
        return None


class OwnProcesses:
    """Which processes are the worker's, and how much CPU and memory they use."""

    def __init__(self, roots: Callable[[], Iterable[int]] = lambda: [os.getpid()],
                 uids: Iterable[int] = (), catalog: ProcessCatalog | None = None,
                 children: Callable[[int], list[int]] = children,
                 cpu_seconds: Callable[[int], tuple[float, float] | None] = _cpu_seconds,
                 wall: Callable[[], float] = time.time) -> None:
        self._roots = roots
        self.uids = frozenset(uids)
        self.catalog = catalog
        self._children = children
        self._cpu_seconds = cpu_seconds
        self._wall = wall
        self._last: dict[int, float] = {}
        self._last_wall: float | None = None

    def pids(self) -> set[int]:
        found: set[int] = set()
        todo = list(self._roots())
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(self._children(pid))
        if self.uids and self.catalog is not None:
            found |= self.catalog.pids_of_uids(self.uids)
        return found

    def cpu_delta(self) -> float:
        """CPU seconds the own processes used since the previous call.

        A process first seen now counts from zero only if it started after the
        previous call; an older one (found late) counts from now on.
        """
        now = self._wall()
        used = 0.0
        current: dict[int, float] = {}
        for pid in self.pids():
            sample = self._cpu_seconds(pid)
            if sample is None:
                continue
            total, created = sample
            current[pid] = total
            if pid in self._last:
                used += max(0.0, total - self._last[pid])
            elif self._last_wall is not None and created >= self._last_wall:
                used += total
        self._last, self._last_wall = current, now
        return used

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except (psutil.Error, OSError):
                continue
        return total
