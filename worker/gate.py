"""The gate: owner decisions in, consumption and task processes out. No Celery import here.

HTCondor's DESKTOP policy done on a Celery worker:

- ``idle``: stopped task processes are continued, *then* consumption resumes;
- ``busy``: consumption stops, *then* every process of every pool child is
  stopped; the state counts as applied only once they really are stopped;
- ``preempting`` (busy for ``--preempt-after``): the held tasks' processes are
  ended; Celery requeues their tasks (``task_reject_on_worker_lost``) for the
  next idle volunteer, which resumes them from their checkpoint where it can read it
  (the same namespace: the same volunteer, or the team's dedicated workers).

The volunteer may let some work go on while the owner is present
(``running``: CPU work at a low share, or GPU work): the queues of those kinds
stay consumed and their tasks keep running, only the others' processes are
stopped. A GPU task that must stop is ended and requeued instead
(``end_gpu_tasks``): stopped, it would keep its GPU memory while the owner
games; it resumes elsewhere from its last checkpoint.

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

from compute import queues as q
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
    started: float | None = None  # epoch seconds it started running; None: not yet
    job: str | None = None  # the job (chord) it is a part of, when it is one


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
        self.running: frozenset[str] = frozenset()  # kinds that go on while the owner is here
        self.wanted: tuple[str, ...] = ()  # consume nothing until the owner is known away
        self.consuming: tuple[str, ...] | None = None  # what the consumer was last set to
        self.suspended = False  # pool processes may be stopped
        self.stopped: list[int] = []
        self.suspension = SuspensionClock()  # stopped seconds, for time limits
        self.preempted: list[str] = []  # task ids ended by preemption, newest last
        self._lock = threading.Lock()

    @property
    def lock(self) -> threading.Lock:
        """Held while the gate acts; the throttle and the caps act under it too."""
        return self._lock

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

    def apply(self, state: OwnerState, *, running: frozenset[str] = frozenset(),
              end_gpu_tasks: bool = False) -> None:
        """Make consumption and task processes match ``state``.

        While the owner is present, tasks of the kinds in ``running`` (``cpu``,
        ``gpu``) go on and their queues stay consumed; with ``end_gpu_tasks``
        a GPU task that must stop is ended and requeued instead.
        """
        with self._lock:
            if state is OwnerState.IDLE:
                self._continue()
                self._consume(self.queues)
            else:
                self._consume(tuple(name for name in self.queues if q.kind(name) in running))
                if end_gpu_tasks and q.GPU not in running:
                    self._end_gpu_tasks()
                self._stop(running)
                if state is OwnerState.PREEMPTING:
                    self._preempt(kinds=running)
            if (state, running) != (self.state, self.running):
                log.info("owner %s: %s", state.value, self._summary(state, running))
            self.state, self.running = state, running

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

    def running_pids(self) -> list[int]:
        """Pool processes that run now (the throttle's share of the machine)."""
        stopped = set(self.stopped)
        return [pid for pid in self.procs.pool() if pid not in stopped]

    def _to_stop(self, running: frozenset[str]) -> list[int]:
        if not running:
            return self.procs.pool()
        # Only the processes of held tasks of a stopped kind: idle pool processes
        # must stay able to take the kinds that go on.
        return sorted({task.worker_pid for task in self.actuator.held()
                       if task.worker_pid and q.kind(task.queue) not in running})

    def _stop(self, running: frozenset[str] = frozenset()) -> None:
        self.suspended = True
        self.suspension.stopped()
        targets = self._to_stop(running)
        if running:  # the kinds that go on may have been stopped on an earlier tick
            self.procs.resume([pid for pid in self.stopped if pid not in targets])
        try:
            self.stopped = self.procs.stop(targets)
        except TimeoutError as exc:  # reported now, retried on the next tick
            log.warning("task processes not stopped yet: %s", exc)

    def _end_gpu_tasks(self) -> None:
        """End held GPU tasks at once (requeued): a stopped one would keep its GPU memory."""
        ended = set(self.preempted)
        held = [task for task in self.actuator.held()
                if task.task_id not in ended and task.worker_pid and q.kind(task.queue) == q.GPU]
        if not held:
            return
        self.procs.kill(sorted({task.worker_pid for task in held if task.worker_pid}))
        self.preempted = [*self.preempted[-100:], *(task.task_id for task in held)]
        for task in held:
            log.warning("ended GPU task %s[%s] on the owner's return: it would hold GPU memory "
                        "while stopped; back to the queue, resumed from its last checkpoint",
                        task.name, task.task_id)

    def _continue(self) -> None:
        if self.suspended:
            self.procs.resume(self.procs.pool())
            self.suspended, self.stopped = False, []
            self.suspension.continued()

    def _preempt(self, skip: set[str] | None = None,
                 kinds: frozenset[str] = frozenset()) -> None:
        ended = set(self.preempted)
        held = [task for task in self.actuator.held()
                if task.task_id not in ended and task.queue not in (skip or set())
                and q.kind(task.queue) not in kinds]
        if not held:
            return
        roots = {task.worker_pid for task in held if task.worker_pid}
        if not kinds and any(task.worker_pid is None for task in held):
            roots |= set(self.procs.pool())  # not started yet: its pool child is unknown
        self.procs.kill(sorted(roots))
        self.preempted = [*self.preempted[-100:], *(task.task_id for task in held)]
        for task in held:
            log.warning("preempted %s[%s]: ended, back to the queue for another volunteer",
                        task.name, task.task_id)

    def _summary(self, state: OwnerState, running: frozenset[str] = frozenset()) -> str:
        if state is OwnerState.IDLE:
            return f"consuming {','.join(self.queues)}"
        consuming = ",".join(self.wanted) or "nothing"
        goes_on = f" ({' and '.join(sorted(running))} work goes on)" if running else ""
        what = f"consuming {consuming}{goes_on}; {len(self.stopped)} task processes stopped"
        return what + ("; held tasks ended and requeued" if state is OwnerState.PREEMPTING
                       else "")
