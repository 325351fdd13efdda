"""The volunteer's preferences applied to the owner policy: what may run, and how much. Pure.

The owner policy (``worker.policy``) says whether the owner is away; this
module adds what the volunteer chose (``worker.preferences``) and returns a
:class:`Plan` the gate carries out:

- *holds*: paused, snoozed, outside the weekly schedule. They keep the worker
  busy without counting as the owner being present, so work starts as soon
  as they lift when the owner has been away long enough;
- the thresholds the volunteer overrides (idle time, battery) replace the
  worker's settings from the next reading on;
- *how much*: while the owner is away, CPU tasks run at most
  ``cpu_limit_percent`` of the time; while the owner is present, CPU work may
  go on at ``cpu_while_present`` percent and GPU work may go on with
  ``[gpu] while_present`` (others' GPU use still stops it);
- on the owner's return, tasks of a kind that must stop and hold a GPU are
  ended and requeued rather than stopped in GPU memory, unless the volunteer
  chose to keep them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from worker.idle.reading import Reading
from worker.policy import Decision, OwnerState, Policy, Reason, Thresholds
from worker.preferences import Preferences, Watched

CPU, GPU = "cpu", "gpu"

#: Owner reasons that concern the GPU only: CPU work while present is still fine,
#: GPU work is not.
_GPU_REASONS = {"gpu"}


@dataclass(frozen=True)
class Plan:
    """What the gate does: the owner state, and what runs despite it, how much."""

    decision: Decision
    running: frozenset[str]  # task kinds that run now (cpu, gpu)
    duty: float  # share of the time running CPU tasks may use (1.0: no throttle)
    end_gpu_tasks: bool  # stopping a GPU task ends and requeues it instead

    @property
    def state(self) -> OwnerState:
        return self.decision.state

    def to_json(self) -> dict[str, object]:
        return {"running": sorted(self.running), "duty": round(self.duty, 3),
                "end_gpu_tasks": self.end_gpu_tasks}


def _clock_text(wall: float, zone: str | None) -> str:
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(wall, ZoneInfo(zone) if zone else None)
    return local.strftime("%a %H:%M")


def holds(prefs: Preferences, wall: float) -> tuple[Reason, ...]:
    """The volunteer's reasons not to work now, whatever the owner does."""
    found: list[Reason] = []
    if prefs.paused:
        found.append(Reason("paused", "paused by the volunteer until resumed"))
    if prefs.snooze_until > wall:
        found.append(Reason("snoozed", "snoozed until "
                            f"{_clock_text(prefs.snooze_until, prefs.schedule.zone)}"))
    if not prefs.schedule.allows(wall):
        upcoming = prefs.schedule.next_change(wall)
        when = (f"; next work window {_clock_text(upcoming, prefs.schedule.zone)}"
                if upcoming else "")
        found.append(Reason("schedule", f"outside the volunteer's schedule{when}"))
    return tuple(found)


def thresholds(base: Thresholds, prefs: Preferences) -> Thresholds:
    """The worker's thresholds with the volunteer's overrides."""
    changes: dict[str, object] = {}
    if prefs.idle_after is not None:
        changes["idle_after"] = prefs.idle_after
    if prefs.run_on_battery is not None:
        changes["run_on_battery"] = prefs.run_on_battery
    if prefs.battery_floor is not None:
        changes["battery_floor_percent"] = prefs.battery_floor
    return replace(base, **changes) if changes else base


def plan(decision: Decision, prefs: Preferences) -> Plan:
    """What runs, given the owner decision (holds included) and the preferences."""
    end_gpu = not prefs.keep_gpu_tasks
    if decision.state is OwnerState.IDLE:
        return Plan(decision, frozenset({CPU, GPU}), prefs.cpu_limit_percent / 100, end_gpu)
    codes = {reason.code for reason in decision.reasons}
    if codes & {"paused", "snoozed", "schedule"}:
        return Plan(decision, frozenset(), 1.0, end_gpu)
    running: set[str] = set()
    if prefs.cpu_while_present > 0:
        running.add(CPU)
    if prefs.gpu_while_present and not codes & _GPU_REASONS:
        running.add(GPU)
    duty = min(prefs.cpu_while_present, prefs.cpu_limit_percent) / 100 if CPU in running \
        else 1.0
    return Plan(decision, frozenset(running), duty, end_gpu)


class Rules:
    """The owner policy with the volunteer's preferences: ``update`` like a Policy.

    ``prefs`` is called on every reading (a :class:`~worker.preferences.Watched`
    file's ``current``), so a changed file applies from the next reading.
    ``plan`` is the last reading's :class:`Plan`.
    """

    def __init__(self, policy: Policy, prefs: Callable[[], Preferences], *,
                 wall: Callable[[], float] = time.time, watched: Watched | None = None) -> None:
        self.policy = policy
        self.watched = watched  # the file behind ``prefs``, when there is one
        self.base = policy.limits
        self._prefs = prefs
        self._wall = wall
        self.prefs = prefs()
        self.plan: Plan | None = None

    @property
    def limits(self) -> Thresholds:
        return self.policy.limits

    def update(self, reading: Reading) -> Decision:
        prefs = self.prefs = self._prefs()
        self.policy.limits = thresholds(self.base, prefs)
        decision = self.policy.update(reading, holds(prefs, self._wall()))
        self.plan = plan(decision, prefs)
        return decision
