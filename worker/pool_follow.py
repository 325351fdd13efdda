"""The pool's size follows the volunteer's share of cores (``[usage] max_cpus_percent``) at runtime.

At start the worker sizes its prefork pool from the preferences
(``worker.runner.pool_size``); this service checks the (reloaded) preferences
every ``every`` seconds and grows or shrinks the pool to
``prefs.cores(total)``, the way Celery's ``pool_grow`` / ``pool_shrink``
remote-control commands do (``CeleryActuator.resize_pool``). A worker
started with ``--concurrency`` keeps that size: the flag wins. Celery shrinks
only idle pool processes; a busy one goes when its task ends (the next
checks try again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from worker.background import Background
from worker.preferences import Preferences

log = logging.getLogger(__name__)


class PoolFollower:
    def __init__(self, prefs: Callable[[], Preferences], cores: int, size: int,
                 resize: Callable[[int], int | None], *, every: float = 1.0) -> None:
        self.prefs = prefs
        self.cores = cores
        self.size = size  # what the pool was last set to
        self._resize = resize  # -> the size the pool has now (None: not attached yet)
        self.every = every
        self._loop = Background("idle-accel-pool-size", self._run)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def follow(self) -> None:
        target = self.prefs().cores(self.cores)
        if target == self.size:
            return
        now = self._resize(target)
        if now is None:
            return
        if now != self.size:
            log.info("pool: %d processes (max_cpus_percent of %d cores wants %d)", now,
                     self.cores, target)
        self.size = now

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            try:
                self.follow()
            except Exception:
                log.exception("pool size not changed; trying again")
