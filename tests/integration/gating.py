"""Helpers for gate tests: a host sensor file the test controls, and a worker's pool processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from worker.idle import hostfile
from worker.local.worker_process import WorkerProcess


class Owner:
    """The host side of a volunteer: writes the sensor file a worker reads (contract 5)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.busy()

    @classmethod
    def away(cls, path: Path) -> Owner:
        """An owner who has already left (the file says idle)."""
        owner = cls(path)
        owner.idle()
        return owner

    def busy(self) -> None:
        hostfile.write(self.path, {"state": "busy", "at": time.time(),
                                   "reasons": [{"code": "input", "message": "test owner"}]})

    def idle(self) -> None:
        hostfile.write(self.path, {"state": "idle", "at": time.time()})

    @property
    def flag(self) -> str:
        return f"file:{self.path}"


def pool_processes(worker: WorkerProcess) -> list[psutil.Process]:
    """Every process under the worker's main process (its pool and what tasks spawned)."""
    return psutil.Process(worker.pid).children(recursive=True)


def statuses(worker: WorkerProcess) -> set[str]:
    found = set()
    for process in pool_processes(worker):
        try:
            found.add(process.status())
        except psutil.NoSuchProcess:
            continue
    return found


def received(workers: list[WorkerProcess], task_id: str) -> int:
    """How many times any of ``workers`` received task ``task_id`` (from their logs)."""
    return sum(worker.log_text().count(f"[{task_id}] received") for worker in workers)


def fleet(broker) -> dict[str, dict]:
    from worker.status import read_fleet

    with broker.client() as client:
        return {document["node"]: document for document in read_fleet(client)}


def dumps(value) -> str:
    return json.dumps(value, indent=1)


def cpu_and_runnable(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds used, and seconds it could run (used + run-queue wait; Linux schedstat)."""
    times = process.cpu_times()
    used = times.user + times.system
    try:
        with open(f"/proc/{process.pid}/schedstat") as stat:
            ran, waited = (int(value) / 1e9 for value in stat.read().split()[:2])
        return used, ran + waited
    except OSError:
        return used, used


def run_share(process: psutil.Process, seconds: float) -> tuple[float, float]:
    """Over ``seconds``: the share of a core ``process`` used, and the share of the time
    it was not stopped (what a CPU throttle sets, whatever else loads the machine)."""
    before, start = cpu_and_runnable(process), time.monotonic()
    time.sleep(seconds)
    after, wall = cpu_and_runnable(process), time.monotonic() - start
    return (after[0] - before[0]) / wall, (after[1] - before[1]) / wall
