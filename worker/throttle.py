"""The CPU throttle: running task processes get at most ``duty`` of the time (BOINC's
``cpu_usage_limit``), by stopping and continuing them in a duty cycle.

Every ``period`` seconds the pool processes that run (``Gate.running_pids``:
the gate's stopped ones left out) and everything they spawned run for
``duty * period`` seconds, then are stopped for the rest, with the gate's own
mechanism (``worker.taskprocs``: SIGSTOP / NtSuspendProcess, whole trees).
No priority games: a stopped process gets no CPU at all, so the share holds
whatever else the machine runs.

Cooperation with the gate: each switch happens under the gate's lock, pids
are taken from the gate at that moment, and a process the gate stopped (the
owner is back) is never continued here. The gate continuing the pool (the
owner left) may cut an off phase short; the next phase restores the rhythm.
``duty`` 1.0 (the default) runs no thread at all, and lowering it back to
1.0 continues whatever the throttle stopped.

Time limits: throttled seconds count as stopped time in the gate's
:class:`~worker.suspension.SuspensionClock`, so a task's soft and hard limits
count only the time it could run, as for the gate's stops (a task throttled
to 50 % needs twice the wall time; it must not fail for it). The throttle
stops every running pool process at once, which is what the pool-wide clock
assumes. It touches the clock only while the gate has nothing stopped
(otherwise the gate's stop is already being counted).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from worker import taskprocs

log = logging.getLogger(__name__)

#: One on+off cycle, seconds (BOINC switches once a second too).
PERIOD = 1.0
#: Below this duty the off phase would be almost the whole period: keep a floor.
MIN_DUTY = 0.02


class Throttle:
    """Stop and continue the gate's running pool processes so they run ``duty`` of the time."""

    def __init__(self, gate: Any, *, period: float = PERIOD,
                 stop: Callable[[Iterable[int]], list[int]] | None = None,
                 resume: Callable[[Iterable[int]], list[int]] | None = None) -> None:
        self.gate = gate
        self.period = period
        self._stop_trees = stop or (lambda pids: taskprocs.stop_trees(pids, timeout=0.5))
        # Exactly the pids it stopped, children first: not their trees walked again (a
        # process the gate stopped since must stay stopped).
        self._resume_trees = resume or (
            lambda pids: taskprocs.continue_trees(pids, children=lambda _pid: []))
        self.duty = 1.0
        self.held: list[int] = []  # processes the throttle stopped (trees included)
        self.counting = False  # the throttle's off phase is on the suspension clock
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()  # start/stop of the thread

    # -- control -------------------------------------------------------------------------
    def set_duty(self, duty: float) -> None:
        """Run at most ``duty`` (0..1] of the time from the next phase; 1.0 stops throttling."""
        duty = 1.0 if duty >= 1.0 else max(MIN_DUTY, float(duty))
        if duty == self.duty:
            return
        log.info("CPU throttle: %s", "off" if duty >= 1.0 else
                 f"task processes run {duty:.0%} of the time")
        self.duty = duty
        if duty >= 1.0:
            self.stop()
        else:
            self._start()
            self._wake.set()  # a new duty applies at once, not after the current phase

    def _start(self) -> None:
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return
            self._quit.clear()
            self._thread = threading.Thread(target=self._run, name="idle-accel-throttle",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the cycle and continue what it stopped (not what the gate stopped)."""
        with self._guard:
            thread, self._thread = self._thread, None
            self._quit.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._phase_on()
        self.duty = 1.0

    # -- the cycle ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._quit.is_set():
                duty = self.duty
                if duty >= 1.0:
                    return
                if self._sleep(duty * self.period):
                    continue
                self._phase_off()
                self._sleep((1.0 - duty) * self.period)
                self._phase_on()
        except Exception:  # a dead throttle must not leave tasks stopped
            log.exception("CPU throttle failed; task processes run unthrottled")
        finally:
            self._phase_on()

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; True when woken early (new duty, or quitting)."""
        woken = self._wake.wait(seconds)
        self._wake.clear()
        return woken

    def _phase_off(self) -> None:
        with self.gate.lock:  # ordered with the gate's own stops and continues
            if self._quit.is_set():
                return
            pids = self.gate.running_pids()
            if not pids:
                return
            if not self.gate.suspended:
                self.gate.suspension.stopped()
                self.counting = True
            try:
                self.held = self._stop_trees(pids)
            except TimeoutError as exc:  # stopped all the same: SIGSTOP lands a moment later
                log.debug("throttle: %s", exc)
                self.held = taskprocs.tree(pids)

    def _phase_on(self) -> None:
        with self.gate.lock:
            gate_stopped = set(self.gate.stopped) if self.gate.suspended else set()
            mine = [pid for pid in self.held if pid not in gate_stopped]
            self.held = []
            if mine:
                self._resume_trees(mine)
            if self.counting and not self.gate.suspended:
                self.gate.suspension.continued()
            self.counting = False
