"""Diagnostic tasks for smoke-testing a fleet (DESIGN.md contract 3), routed to ``cpu``.

Each returns a JSON object whose ``"hostname"`` is the Celery node name of
the worker that ran it.
"""

from __future__ import annotations

import time

from celery import shared_task

from compute import validate
from compute.errors import InvalidArgument

_OPTIONS = {"bind": True, "throws": (InvalidArgument,)}  # queue: see compute.queues.ROUTES

#: Longest ``sleep`` or ``burn`` accepted, in seconds. Diagnostics are short;
#: anything longer is a mistake, not a test.
MAX_SECONDS = 600.0


@shared_task(name="compute.diag.noop", **_OPTIONS)
def noop(self) -> dict:
    """Do nothing; proves a worker takes and answers tasks."""
    return {"hostname": self.request.hostname}


@shared_task(name="compute.diag.sleep", **_OPTIONS)
def sleep(self, seconds: float) -> dict:
    """Wait ``seconds`` (wall clock) without using the CPU."""
    duration = validate.seconds(self.name, "seconds", seconds, maximum=MAX_SECONDS)
    started = time.monotonic()
    time.sleep(duration)
    return {
        "hostname": self.request.hostname,
        "seconds": duration,
        "elapsed": round(time.monotonic() - started, 6),
    }


@shared_task(name="compute.diag.burn", **_OPTIONS)
def burn(self, seconds: float) -> dict:
    """Keep one CPU busy until this process has used ``seconds`` of CPU time.

    Progress is CPU time, not wall time, so a stopped (suspended) burn makes
    no progress until it is continued.
    """
    duration = validate.seconds(self.name, "seconds", seconds, maximum=MAX_SECONDS)
    started_cpu = time.process_time()
    started_wall = time.monotonic()
    spins = 0
    while time.process_time() - started_cpu < duration:
        for _ in range(10_000):
            spins += 1
    return {
        "hostname": self.request.hostname,
        "seconds": duration,
        "cpu_seconds": round(time.process_time() - started_cpu, 6),
        "elapsed": round(time.monotonic() - started_wall, 6),
        "spins": spins,
    }
