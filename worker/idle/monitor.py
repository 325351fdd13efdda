"""The detector loop: read, decide, report — and the snapshot document it reports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from worker.idle.reading import Reading
from worker.idle.wake import Wake
from worker.policy import Decision, OwnerState, Policy


class Reads(Protocol):
    def read(self) -> Reading: ...


#: With input events, the away loop ticks every this many ``slow`` intervals (input wakes it
#: at once; others' CPU is a 20 s average anyway): 3 s, within the cost goal of 0.1 % of a core.
EVENT_AWAY_FACTOR = 3.0


class Monitor:
    """Ties a sampler to the policy. ``tick()`` once, or ``run()`` until stopped.

    ``events`` (:class:`worker.idle.wake.Wake`; by default the sampler's own),
    when it has a source, makes the loop event-driven while the owner is
    away: it sleeps until input or the slow interval, not a fixed fast one.
    """

    def __init__(self, sampler: Reads, policy: Policy, events: Wake | None = None, *,
                 away_factor: float = EVENT_AWAY_FACTOR) -> None:
        self.sampler = sampler
        self.policy = policy
        self.away_factor = away_factor
        # A local sampler carries the input-event sources it reads (worker.idle.detector).
        self.events = events if events is not None else getattr(sampler, "events", None)

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

        With input events, the away loop ticks every ``away_factor * slow``
        seconds and at once when the owner's first event arrives; should
        every source die it polls at ``fast`` again.
        """
        slow = fast if slow is None else slow
        events = self.events if self.events is not None and self.events.active else None
        if events is not None:
            # ``stop`` ends the event wait too: a thread parked on it costs nothing.
            threading.Thread(target=lambda: (stop.wait(), events.interrupt()),
                             name="idle-accel-wake-stop", daemon=True).start()
        while not stop.is_set():
            started = time.monotonic()
            reading, decision = self.tick()
            on_tick(reading, decision)
            away = decision.state is OwnerState.IDLE
            if events is not None and events.active:
                events.arm(away)
            if events is not None and events.active:
                interval = slow * self.away_factor if away else slow
                events.wait(max(0.0, interval - (time.monotonic() - started)))
            else:
                interval = fast if away else slow
                stop.wait(max(0.0, interval - (time.monotonic() - started)))
        if events is not None:
            events.arm(False)


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
