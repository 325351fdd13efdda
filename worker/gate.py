"""The gate: owner decisions in, consumption and task processes out. No Celery import here.

HTCondor's DESKTOP policy done on a Celery worker:

- ``idle``: stopped task processes are continued, *then* consumption resumes;
- ``busy``: consumption stops, *then* every process of every pool child is
  stopped; the state counts as applied only once they really are stopped;
- ``preempting`` (busy for ``--preempt-after``): the held tasks' processes are
  ended; Celery requeues their tasks (``task_reject_on_worker_lost``) for the
  next idle volunteer, which resumes them from their checkpoint where it can read it
  (the same namespace: the same volunteer, or the team's dedicated workers).

``apply`` is called on every detector tick and is idempotent, so a task that
slipped in while the consumer was being cancelled is stopped on the next tick.
The Celery side (``worker/celery_gate.py``) implements :class:`Actuator`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker import taskprocs
from worker.idle.processes import children as direct_children
from worker.policy import OwnerState
from worker.suspension import SuspensionClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """A task this worker holds (received, unacknowledged): running or suspended."""

    task_id: str
    name: str
    worker_pid: int | None  # the pool child running it; None until it starts
    delivery_tag: str | None
    queue: str = ""  # the queue it came from


class Actuator(Protocol):
    def set_queues(self, names: Sequence[str]) -> bool:
        """Consume exactly ``names``; True once done (False: applied at the next start)."""

    def held(self) -> list[Held]:
        """The tasks this worker holds right now."""


@dataclass(frozen=True)
class ProcessControl:
    """How the gate stops, continues and ends processes (faked in unit tests)."""

    pool: Callable[[], list[int]] = lambda: direct_children(os.getpid())
    stop: Callable[[Iterable[int]], list[int]] = taskprocs.stop_trees
    resume: Callable[[Iterable[int]], list[int]] = taskprocs.continue_trees
    kill: Callable[[Iterable[int]], list[int]] = taskprocs.kill_trees


class Gate:
    def __init__(self, actuator: Actuator, queues: Sequence[str], *,
                 emergency_queues: Sequence[str] = (),
                 procs: ProcessControl | None = None) -> None:
        self.actuator = actuator
        self.normal_queues = tuple(queues)
        self.emergency_queues = tuple(emergency_queues)
        self.emergency = False  # fleet mode: consume only the emergency queues
        self.procs = procs or ProcessControl()
        self.state: OwnerState | None = None  # the state last fully applied
        self.wanted: tuple[str, ...] = ()  # consume nothing until the owner is known away
        self.consuming: tuple[str, ...] | None = None  # what the consumer was last set to
        self.suspended = False  # pool processes may be stopped
        self.stopped: list[int] = []
        self.suspension = SuspensionClock()  # stopped seconds, for time limits
        self.preempted: list[str] = []  # task ids ended by preemption, newest last
        self._lock = threading.Lock()

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues to consume while the owner is away, in the fleet's mode."""
        return self.emergency_queues if self.emergency else self.normal_queues

    def set_emergency(self, on: bool, *, requeue_running: bool = False) -> None:
        """Switch to the emergency queues (or back).

        A worker taking tasks switches its queues at once; a busy one takes the
        new set when its owner leaves. With ``requeue_running``, normal tasks
        held when the switch turns on are ended (after the switch, so they are
        not taken again here) and go back to their queue; otherwise they finish.
        """
        with self._lock:
            switching_on = on and not self.emergency
            self.emergency = on
            if self.state is OwnerState.IDLE:
                self._consume(self.queues)  # stop taking normal work first
            if switching_on and requeue_running:
                self._preempt(skip=set(self.emergency_queues))

    def apply(self, state: OwnerState) -> None:
        """Make consumption and task processes match ``state``."""
        with self._lock:
            if state is OwnerState.IDLE:
                self._continue()
                self._consume(self.queues)
            else:
                self._consume(())
                self._stop()
                if state is OwnerState.PREEMPTING:
                    self._preempt()
            if state is not self.state:
                log.info("owner %s: %s", state.value, self._summary(state))
            self.state = state

    def release(self) -> None:
        """On shutdown: end suspended tasks (they go back to the queue), continue the rest.

        A stopped task would never finish and a warm shutdown would wait for
        it forever; continuing it would use the owner's machine.
        """
        with self._lock:
            if self.state in (OwnerState.BUSY, OwnerState.PREEMPTING):
                self._preempt()
            self._continue()

    def reapply_queues(self) -> tuple[str, ...]:
        """The queues to consume after a consumer (re)start; the caller applies them."""
        self.consuming = self.wanted
        return self.wanted

    def _consume(self, names: tuple[str, ...]) -> None:
        self.wanted = names
        if self.consuming != names and self.actuator.set_queues(names):
            self.consuming = names

    def _stop(self) -> None:
        self.suspended = True
        self.suspension.stopped()
        try:
            self.stopped = self.procs.stop(self.procs.pool())
        except TimeoutError as exc:  # reported now, retried on the next tick
            log.warning("task processes not stopped yet: %s", exc)

    def _continue(self) -> None:
        if self.suspended:
            self.procs.resume(self.procs.pool())
            self.suspended, self.stopped = False, []
            self.suspension.continued()

    def _preempt(self, skip: set[str] | None = None) -> None:
        ended = set(self.preempted)
        held = [task for task in self.actuator.held()
                if task.task_id not in ended and task.queue not in (skip or set())]
        if not held:
            return
        roots = {task.worker_pid for task in held if task.worker_pid}
        if any(task.worker_pid is None for task in held):
            roots |= set(self.procs.pool())  # not started yet: its pool child is unknown
        self.procs.kill(sorted(roots))
        self.preempted = [*self.preempted[-100:], *(task.task_id for task in held)]
        for task in held:
            log.warning("preempted %s[%s]: ended, back to the queue for another volunteer",
                        task.name, task.task_id)

    def _summary(self, state: OwnerState) -> str:
        if state is OwnerState.IDLE:
            return f"consuming {','.join(self.queues)}"
        what = f"consuming nothing; {len(self.stopped)} task processes stopped"
        return what + ("; held tasks ended and requeued" if state is OwnerState.PREEMPTING
                       else "")
