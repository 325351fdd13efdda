"""The worker's owner loop: detector -> policy -> gate, and the status it reports.

Runs on its own thread in the worker's main process. A volunteer worker ticks
the detector (local signals, or the host's sensor file) and applies each
decision to the gate; a dedicated worker ignores the owner and always
consumes. Either way the status document is published at once when what it
shows changes (state, queues) and every ``status_interval``
otherwise, and only after the gate applied the state: "busy" is reported
once task processes are stopped.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from worker.background import Background
from worker.fleet_mode import Mode
from worker.gate import Gate
from worker.idle.monitor import Monitor
from worker.idle.reading import Reading
from worker.policy import Decision, OwnerState
from worker.status import Publisher
from worker.throttle import Throttle
from worker.volunteer_rules import Rules

log = logging.getLogger(__name__)


class OwnerLoop:
    def __init__(self, gate: Gate, monitor: Monitor | None, publisher: Publisher, *,
                 static: dict[str, Any], fast: float, slow: float, report_every: float,
                 extra: Callable[[], dict[str, Any]] = dict,
                 fleet_mode: Callable[[], Mode] | None = None,
                 emergency_when_busy: bool = False, rules: Rules | None = None,
                 throttle: Throttle | None = None) -> None:
        self.gate = gate
        self.throttle = throttle or Throttle(gate)  # the plan's CPU duty cycle
        self.monitor = monitor  # None: dedicated, the owner is not watched
        self.rules = rules  # the volunteer's preferences over the owner policy
        self.publisher = publisher
        self.static = static
        self.fast, self.slow = fast, slow
        self.report_every = report_every
        self._extra = extra
        self._fleet_mode = fleet_mode
        self.emergency_when_busy = emergency_when_busy
        self.decision: Decision | None = None
        self._logged_why: tuple[Any, ...] = ()
        self._reported_at = -float("inf")
        self._reported: tuple[Any, ...] = ()
        self._loop = Background("idle-accel-owner", self._run)
        self.services: list[Any] = []  # started and stopped with the loop (the control page)

    def nudge(self) -> None:
        """Tick now rather than at the next interval (the consumer started, the volunteer
        changed a preference): an event-driven loop sleeps up to 3 s while away."""
        events = getattr(self.monitor, "events", None)
        if events is not None and events.active:
            events.interrupt()

    def set_mode(self, mode: Mode) -> None:
        """Follow the fleet's mode (from the broadcast, or read from Redis)."""
        if mode.emergency != self.gate.emergency:
            log.warning("fleet mode: %s", "EMERGENCY" if mode.emergency else "normal")
            self.nudge()  # report the new mode at once
        self.gate.set_emergency(mode.emergency, requeue_running=mode.requeue_running)

    def _refresh_mode(self) -> None:
        if self._fleet_mode is None:
            return
        try:
            self.set_mode(self._fleet_mode())
        except Exception as exc:  # the broker may be restarting: keep the mode we have
            log.debug("fleet mode not read: %s", exc)

    def on_tick(self, _reading: Reading | None, decision: Decision | None) -> None:
        state = OwnerState.IDLE if decision is None else decision.state
        if self.gate.emergency and self.emergency_when_busy:
            state = OwnerState.IDLE  # this volunteer opted in: emergency work even when busy
        plan = self.rules.plan if self.rules is not None and decision is not None else None
        if plan is None:
            self.gate.apply(state)
        else:
            self.gate.apply(state, running=plan.running, end_gpu_tasks=plan.end_gpu_tasks)
        self.throttle.set_duty(plan.duty if plan is not None else 1.0)
        self._log_why(state, decision)
        self.decision = decision
        now = time.monotonic()
        # Report at once what changed (state, queues, fleet mode), else as a heartbeat; task
        # counts ride on the heartbeat (counting them every tick costs the loop).
        shown = (self.gate.state, self.gate.consuming, self.gate.emergency)
        if shown != self._reported or now - self._reported_at >= self.report_every:
            if now - self._reported_at >= self.report_every:
                self._refresh_mode()  # catch up on a missed broadcast
            self.publisher.publish(self.document())
            self._reported_at, self._reported = now, shown

    def _log_why(self, state: OwnerState, decision: Decision | None) -> None:
        """Say why the worker waits, when that changes: the policy's reasons (including how
        long the owner must still be away), not only "consuming nothing"."""
        if decision is None or state is OwnerState.IDLE:
            self._logged_why = ()
            return
        codes = (state, *(reason.code for reason in decision.reasons))
        if codes != self._logged_why:
            self._logged_why = codes
            why = "; ".join(reason.message for reason in decision.reasons) or "no reason given"
            log.info("taking no tasks (owner %s): %s", state.value, why)

    def document(self) -> dict[str, Any]:
        decision = self.decision
        held = self.gate.actuator.held()
        state = self.gate.state or OwnerState.BUSY
        suspended = state is not OwnerState.IDLE
        return {
            **self.static,
            "host": socket.gethostname(),
            "at": round(time.time(), 3),
            "state": state.value,
            "reasons": [r.to_json() for r in decision.reasons] if decision else [],
            "notes": [n.to_json() for n in decision.notes] if decision else [],
            "away_for": round(decision.away_for, 1) if decision else None,
            "busy_for": round(decision.busy_for, 1) if decision else 0.0,
            "consuming": list(self.gate.consuming or ()),
            "running": 0 if suspended else len(held),
            "suspended": len(held) if suspended else 0,
            "stopped_processes": len(self.gate.stopped),
            "fleet_mode": "emergency" if self.gate.emergency else "normal",
            "emergency_when_busy": self.emergency_when_busy,
            **self._preferences(),
            **self._extra(),
        }

    def _preferences(self) -> dict[str, Any]:
        rules = self.rules
        if rules is None:
            return {}
        watched = getattr(rules, "watched", None)
        return {"preferences": rules.prefs.to_json(),
                "preferences_file": str(watched.path) if watched and watched.path else None,
                "preferences_problem": watched.problem if watched else None,
                "plan": rules.plan.to_json() if rules.plan else None}

    def _run_dedicated(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.on_tick(None, None)
            stop.wait(self.slow)

    def _run(self, stop: threading.Event) -> None:
        try:
            if self.monitor is None:
                self._run_dedicated(stop)
            else:
                self.monitor.run(stop, self.on_tick, fast=self.fast, slow=self.slow)
        except Exception:  # a dead owner loop must not leave a gate open
            log.exception("owner loop failed; the worker stops taking tasks")
            self.gate.apply(OwnerState.BUSY)

    def start(self) -> None:
        self._refresh_mode()  # a worker that joins late learns the mode first
        self._loop.start()
        for service in self.services:
            service.start()

    def stop(self) -> None:
        """Stop the loop, release suspended tasks and withdraw the status."""
        for service in self.services:
            service.stop()
        self._loop.stop()
        self.throttle.stop()  # continue what it stopped: a warm shutdown waits for tasks
        self.gate.release()
        self.publisher.withdraw()
