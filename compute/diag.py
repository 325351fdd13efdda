"""Diagnostic tasks for smoke-testing a fleet (DESIGN.md contract 3), routed to ``cpu``.

``noop``, ``sleep`` and ``burn`` return a JSON object whose ``"hostname"`` is
the Celery node name of the worker that ran it. ``checksum`` is deterministic
(the same answer on every machine, no host name in it): the task to try
verified results with (``verify=k``).
"""

from __future__ import annotations

import hashlib
import time

from celery import shared_task

from compute import validate
from compute.checkpoint import CheckpointTask
from compute.errors import InvalidArgument

_OPTIONS = {"bind": True, "throws": (InvalidArgument,)}  # queue: see compute.queues.ROUTES

#: CPU seconds between two checkpoints of a burn.
CHECKPOINT_EVERY = 0.2

#: Longest ``sleep`` or ``burn`` accepted, in seconds. Diagnostics are short;
#: anything longer is a mistake, not a test.
MAX_SECONDS = 600.0

#: Most hash rounds a ``checksum`` may ask for (about 10 s of one core).
MAX_ROUNDS = 10_000_000
MAX_TEXT = 64 * 1024


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


@shared_task(name="compute.diag.burn", base=CheckpointTask, **_OPTIONS)
def burn(self, seconds: float) -> dict:
    """Keep one CPU busy until ``seconds`` of CPU time were spent on this task.

    Progress is CPU time, not wall time, so a stopped (suspended) burn makes
    no progress until it is continued. Progress is checkpointed every
    ``CHECKPOINT_EVERY`` CPU seconds: a burn preempted on one worker resumes on
    the next that can read its checkpoint (the same volunteer, or any dedicated
    worker) from there (``resumed_from`` > 0), not from zero.
    """
    duration = validate.seconds(self.name, "seconds", seconds, maximum=MAX_SECONDS)
    saved = self.restore() or {}
    resumed_from = float(saved.get("done", 0.0))
    spins = int(saved.get("spins", 0))
    started_cpu = time.process_time()
    started_wall = time.monotonic()
    saved_at = resumed_from
    done = resumed_from
    while done < duration:
        for _ in range(10_000):
            spins += 1
        done = resumed_from + time.process_time() - started_cpu
        if done - saved_at >= CHECKPOINT_EVERY:
            self.checkpoint({"done": done, "spins": spins})
            saved_at = done
    self.clear_checkpoint()
    return {
        "hostname": self.request.hostname,
        "seconds": duration,
        "cpu_seconds": round(done, 6),
        "resumed_from": round(resumed_from, 6),
        "elapsed": round(time.monotonic() - started_wall, 6),
        "spins": spins,
    }


@shared_task(name="compute.diag.checksum", **_OPTIONS)
def checksum(self, text: str, rounds: int = 1) -> dict:
    """SHA-256 of ``text``, hashed again ``rounds - 1`` times: the same on every machine."""
    data = validate.text(self.name, "text", text, max_length=MAX_TEXT).encode()
    rounds = validate.count(self.name, "rounds", rounds, minimum=1, maximum=MAX_ROUNDS)
    digest = hashlib.sha256(data).digest()
    for _ in range(rounds - 1):
        digest = hashlib.sha256(digest).digest()
    return {"sha256": digest.hex(), "rounds": rounds}
