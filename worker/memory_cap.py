"""The caps watcher: a task over its memory or scratch-disk cap is ended and requeued.

BOINC's ``ram_max_used_*`` and ``disk_max_used_gb`` on a Celery worker. Every
``every`` seconds (only while a cap is set) the watcher measures each held,
started task: the memory of its pool process and everything it spawned (USS
where the OS reports it cheaply, Linux's ``smaps_rollup``: the memory that
ending the task gives back, not the pages the pool shares with the worker;
else RSS), and the size of its scratch folder (``worker/scratch.py``).

- a task over ``[usage] task_memory_mb`` or ``scratch_disk_gb`` is ended;
- while all tasks together exceed ``total_memory_mb``, the largest is ended
  first, then the next largest, until the rest fit.

Ending is the gate's preemption: the task's process tree is killed and
Celery requeues the task (``task_reject_on_worker_lost``), so another
volunteer (or this one, with a fresh pool process) takes it again, rather
than the owner's machine swapping. Each ending is logged with its reason
("used 2,300 MiB > cap 2,048 MiB per task") and listed in the status
document's ``ended`` (newest last), as the gate records ``preempted``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from worker import scratch, taskprocs
from worker.background import Background
from worker.gate import Held
from worker.preferences import Preferences

log = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
#: How many endings the status document keeps.
KEEP = 20
_USS = psutil.LINUX and os.path.exists(f"/proc/{os.getpid()}/smaps_rollup")


def process_memory(pid: int) -> int:
    """Bytes one process uses: USS where cheap (Linux smaps_rollup), else RSS."""
    process = psutil.Process(pid)
    if _USS:
        return int(process.memory_full_info().uss)
    return int(process.memory_info().rss)


def tree_memory(root: int) -> int:
    """Bytes used by ``root`` and everything under it (processes that end meanwhile: 0)."""
    total = 0
    for pid in taskprocs.tree([root]):
        try:
            total += process_memory(pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total


def mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"


def disk_size(size: int) -> str:
    return f"{size / GIB:,.2f} GiB" if size >= GIB else mib(size)


def over_memory(used: dict[str, int], per_task: int, total: int) -> dict[str, str]:
    """Tasks to end for memory, task id -> reason. ``used``: bytes per task; caps 0 = none."""
    ending: dict[str, str] = {}
    if per_task:
        for task_id, size in used.items():
            if size > per_task:
                ending[task_id] = f"used {mib(size)} > cap {mib(per_task)} per task"
    if total:
        rest = {task_id: size for task_id, size in used.items() if task_id not in ending}
        together = sum(rest.values())
        for task_id, size in sorted(rest.items(), key=lambda item: -item[1]):
            if together <= total:
                break
            ending[task_id] = (f"used {mib(size)}, the largest; all tasks {mib(together)} "
                               f"> total cap {mib(total)}")
            together -= size
    return ending


@dataclass(frozen=True)
class Ended:
    task_id: str
    name: str
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "name": self.name, "reason": self.reason,
                "at": round(self.at, 3)}


class CapWatcher:
    """Ends held tasks over the volunteer's memory and scratch-disk caps (see module doc)."""

    def __init__(self, gate: Any, prefs: Callable[[], Preferences], *,
                 scratch_root: Path | None = None, every: float = 0.5,
                 memory: Callable[[int], int] = tree_memory,
                 kill: Callable[[Iterable[int]], list[int]] = taskprocs.kill_trees,
                 clock: Callable[[], float] = time.time,
                 on_end: Callable[[str, str], None] = lambda _task_id, _reason: None,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.gate = gate
        self._on_end = on_end  # told each ending (the worker then hands the task on)
        self._on_change = on_change  # told when the caps change (what was ended may fit now)
        self._caps: tuple[float, ...] | None = None
        self.prefs = prefs
        self.scratch_root = scratch_root
        self.every = every
        self._memory = memory
        self._kill = kill
        self._clock = clock
        self.ended: list[Ended] = []  # newest last
        self._done: dict[tuple[str, int], None] = {}  # (task id, pool pid) ended, oldest first
        self._loop = Background("idle-accel-caps", self._run)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def document(self) -> dict[str, Any]:
        """The status document's part: the latest endings, newest last."""
        return {"ended": [ended.to_json() for ended in self.ended[-KEEP:]]}

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                self.check()
            except Exception:  # a bad measurement must not end the watcher
                log.exception("caps check failed; trying again")

    def check(self) -> list[Ended]:
        """Measure the held tasks once and end those over a cap; the endings."""
        prefs = self.prefs()
        everything = self.gate.actuator.held()
        if self.scratch_root is not None:
            # Every held task keeps its folder: one that just started may not have its
            # pool process noted yet.
            scratch.sweep(self.scratch_root, (task.task_id for task in everything))
        held = [task for task in everything if task.worker_pid]
        per_task, total = prefs.task_memory_mb * MIB, prefs.total_memory_mb * MIB
        disk = int(prefs.scratch_disk_gb * GIB)
        if (per_task, total, disk) != self._caps:
            if self._caps is not None:
                self._on_change()
            self._caps = (per_task, total, disk)
        if not (per_task or total or disk):
            return []
        live = [task for task in held if (task.task_id, task.worker_pid) not in self._done]
        ending: dict[str, str] = {}
        if per_task or total:
            used = {task.task_id: self._memory(task.worker_pid) for task in live
                    if task.worker_pid}
            ending.update(over_memory(used, per_task, total))
        if disk and self.scratch_root is not None:
            for task in live:
                if task.task_id in ending:
                    continue
                size = scratch.size(scratch.folder(self.scratch_root, task.task_id), disk)
                if size > disk:
                    # at least: the walk stops once past the cap
                    ending[task.task_id] = (f"scratch folder {disk_size(size)} "
                                            f"> cap {disk_size(disk)}")
        return self._end([task for task in live if task.task_id in ending], ending)

    def _end(self, tasks: list[Held], reasons: dict[str, str]) -> list[Ended]:
        if not tasks:
            return []
        with self.gate.lock:  # not while the gate stops, continues or preempts them
            self._kill(sorted({task.worker_pid for task in tasks if task.worker_pid}))
        now = self._clock()
        ended = []
        for task in tasks:
            assert task.worker_pid is not None
            self._done[(task.task_id, task.worker_pid)] = None
            if self.scratch_root is not None:
                scratch.remove(self.scratch_root, task.task_id)
            record = Ended(task.task_id, task.name, reasons[task.task_id], now)
            ended.append(record)
            log.warning("ended %s[%s]: %s; back to the queue (the volunteer's cap)",
                        task.name, task.task_id, record.reason)
            self._on_end(task.task_id, record.reason)
        self.ended = [*self.ended[-100:], *ended]
        for old in list(self._done)[:-1000]:
            del self._done[old]
        return ended
