"""Leases on held tasks: fast recovery of a vanished volunteer, no second delivery of a long task.

kombu's Redis transport keeps every delivered, unacknowledged task in the
``unacked_index`` sorted set, scored by delivery time, and any consuming
worker hands back to its queue what is older than ``visibility_timeout``.
Stock Celery must therefore choose: a short timeout re-runs long (or
suspended) tasks while they still run; a long one leaves a vanished
worker's task stranded for an hour.

Here each worker renews the score of every task it holds, running or
suspended, every third of the visibility timeout (``ZADD XX``: an
acknowledged task is never re-added). A held task is never older than a
third of the timeout, so it is never handed out twice however long it runs
or sleeps; a worker that vanishes stops renewing, and its tasks go back to
the queue after the timeout (15 s) plus at most one sweep (5 s). The
renewal is one pipelined round trip per period for all held tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from compute import keys
from worker.background import Background

log = logging.getLogger(__name__)


def renew(client: Any, tags: list[str], now: float, index: str = keys.UNACKED_INDEX
          ) -> list[str]:
    """Move each held task's lease to ``now``; return the tags no longer leased here."""
    if not tags:
        return []
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.zadd(index, {tag: now}, xx=True, ch=True)
    return [tag for tag, changed in zip(tags, pipe.execute(), strict=True) if not changed]


class LeaseKeeper:
    """Renews the leases of ``held()`` delivery tags every ``interval`` seconds, on a thread."""

    def __init__(self, client: Callable[[], Any], held: Callable[[], list[str]],
                 interval: float, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._held = held
        self.interval = interval
        self._clock = clock
        self._loop = Background("idle-accel-leases", self._run)
        self.renewed = 0  # renewals done, for status and tests
        self.lost: list[str] = []  # tags found gone while still held, newest last

    def tick(self) -> None:
        tags = [tag for tag in self._held() if tag]
        lost = renew(self._client(), tags, self._clock())
        self.renewed += len(tags) - len(lost)
        # A tag acknowledged between the listing and the renewal is not lost:
        # only one still held afterwards is (its broker lost data, or the
        # worker was cut off longer than the timeout and the task went elsewhere).
        still = set(self._held())
        for tag in lost:
            if tag in still and tag not in self.lost:
                self.lost = [*self.lost[-100:], tag]
                log.warning("lease of task delivery %s was lost: the broker no longer holds "
                            "it for this worker (restarted without its data, or the task "
                            "was handed to another worker while this one was cut off)", tag)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # the broker may be restarting: retry next period
                log.debug("leases not renewed: %s", exc)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
