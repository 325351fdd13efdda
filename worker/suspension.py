"""How long the gate has kept task processes stopped: time limits count only running time.

Celery's time limits are wall-clock timers armed when a task starts. A task
stopped in place while its owner works would be killed by its hard limit
(``TimeLimitExceeded``, a FAILURE) or hit by its soft one on resume, for
time it never ran. The gate stops and continues the whole pool at once, so
one clock of stopped seconds serves every task: a limit that fires re-arms
itself for the stopped time since it was armed (``worker/celery_gate.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SuspensionClock:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._total = 0.0
        self._since: float | None = None
        self._lock = threading.Lock()

    def stopped(self) -> None:
        """The pool's processes are stopped from now (idempotent while stopped)."""
        with self._lock:
            if self._since is None:
                self._since = self._clock()

    def continued(self) -> None:
        """The pool's processes run again."""
        with self._lock:
            if self._since is not None:
                self._total += self._clock() - self._since
                self._since = None

    def read(self) -> tuple[float, bool]:
        """Total stopped seconds so far (the current stop included), and whether stopped now."""
        with self._lock:
            current = 0.0 if self._since is None else self._clock() - self._since
            return self._total + current, self._since is not None


def owed(clock: SuspensionClock, armed_at: float) -> tuple[float, float]:
    """Seconds a limit armed at stopped-total ``armed_at`` must wait more, and the new mark.

    A task stopped now is owed at least a moment more: its limit fires again
    only after the pool runs.
    """
    total, stopped_now = clock.read()
    more = total - armed_at
    return (max(more, 0.5) if stopped_now else more), total
