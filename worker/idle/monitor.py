"""The detector loop: read, decide, report — and the snapshot document it reports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from worker.idle.reading import Reading
from worker.policy import Decision, OwnerState, Policy


class Reads(Protocol):
    def read(self) -> Reading: ...


class Monitor:
    """Ties a sampler to the policy. ``tick()`` once, or ``run()`` until stopped."""

    def __init__(self, sampler: Reads, policy: Policy) -> None:
        self.sampler = sampler
        self.policy = policy

    def tick(self) -> tuple[Reading, Decision]:
        reading = self.sampler.read()
        return reading, self.policy.update(reading)

    def run(self, stop: threading.Event, on_tick: Callable[[Reading, Decision], None], *,
            fast: float, slow: float | None = None) -> None:
        """Tick until ``stop`` is set: every ``fast`` seconds while the owner is away.

        While the owner is present (busy, preempting) nothing urgent can
        happen (only a long absence changes the state), so the loop ticks
        every ``slow`` seconds: the detector costs least exactly when the
        owner is at the machine. ``slow`` defaults to ``fast``.
        """
        slow = fast if slow is None else slow
        while not stop.is_set():
            started = time.monotonic()
            reading, decision = self.tick()
            on_tick(reading, decision)
            interval = fast if decision.state is OwnerState.IDLE else slow
            stop.wait(max(0.0, interval - (time.monotonic() - started)))


def document(reading: Reading, decision: Decision) -> dict[str, Any]:
    """The snapshot as the sensor file's JSON object (contract 5).

    ``state`` is ``idle`` or ``busy`` (preempting is busy to a reader of the
    file); ``idle_seconds`` is how long the owner has been away, so a worker
    reading the file applies its own ``idle_after`` exactly once.
    """
    snapshot = reading.to_json()
    return {
        "state": "idle" if decision.state is OwnerState.IDLE else "busy",
        "idle_seconds": round(decision.away_for, 3),
        "at": snapshot["wall"],
        "host": socket.gethostname(),
        "policy_state": decision.state.value,
        "busy_for": round(decision.busy_for, 3),
        "reasons": [reason.to_json() for reason in decision.reasons],
        "notes": [note.to_json() for note in decision.notes],
        "signals": snapshot["signals"],
        "details": snapshot["details"],
    }
