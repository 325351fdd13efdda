"""Owner-state policy: readings and a clock in, owner state and reasons out. Pure: no I/O.

Modelled on HTCondor's DESKTOP policy and BOINC's "suspend when in use":

- ``busy`` on the first reading that shows the owner (input within
  ``idle_after``, others' CPU or GPU or memory above their thresholds, on
  battery, low battery, an exclusive program, a host file that says busy or
  cannot be trusted, or an input signal that cannot be measured);
- ``idle`` only once the owner has been away ``idle_after`` seconds without a
  break (``locked_idle_after`` while the screen is locked: a locked screen
  means the owner left, and input on the lock screen is not work);
- ``preempting`` once busy has lasted ``preempt_after`` seconds: suspended
  tasks should be ended and requeued for another volunteer.

"Away since" is tracked as one timestamp, and input idle time moves it too,
so a worker that starts after a night of no input is idle at once, while
readings that flip faster than ``idle_after`` can never make it oscillate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.idle.reading import Measure, Reading


class OwnerState(StrEnum):
    IDLE = "idle"  # consuming tasks
    BUSY = "busy"  # not consuming; running tasks suspended
    PREEMPTING = "preempting"  # busy too long: suspended tasks go back to the queue


@dataclass(frozen=True)
class Reason:
    """One machine-readable reason: a stable ``code`` and a sentence for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Thresholds:
    idle_after: float = 180.0  # BOINC idle_time_to_run: 3 min
    preempt_after: float = 600.0  # HTCondor: suspended for 10 min -> vacate
    locked_idle_after: float = 10.0
    cpu_busy_percent: float = 25.0  # BOINC suspend_cpu_usage
    gpu_busy_percent: float = 20.0
    memory_busy_percent: float = 90.0
    run_on_battery: bool = False  # BOINC run_on_batteries: off
    battery_floor_percent: float = 20.0
    require_input: bool = True
    sensor_max_age: float = 10.0  # file sensor: older than this counts as busy; 0 disables


@dataclass(frozen=True)
class Decision:
    state: OwnerState
    reasons: tuple[Reason, ...]  # why the owner counts as present (empty when idle)
    notes: tuple[Reason, ...]  # what could not be judged, and other facts
    away_for: float  # seconds since the owner was last seen
    busy_for: float  # seconds since the state left idle (0 when idle)
    changed: bool  # the state differs from the previous decision's

    @property
    def consuming(self) -> bool:
        return self.state is OwnerState.IDLE

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "away_for": round(self.away_for, 3),
                "busy_for": round(self.busy_for, 3),
                "reasons": [reason.to_json() for reason in self.reasons],
                "notes": [note.to_json() for note in self.notes]}


def _secs(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def evidence(reading: Reading, limits: Thresholds
             ) -> tuple[list[Reason], list[Reason], float | None]:
    """(reasons the owner is present now, notes, seconds since the owner's last input).

    The last is None when no input time is known (or it does not count).
    """
    if reading.host is not None:
        return _host_evidence(reading.host, limits)
    now_reasons: list[Reason] = []
    notes: list[Reason] = []
    locked = reading.screen_locked.known and bool(reading.screen_locked.value)
    input_idle: float | None = None

    if locked:
        notes.append(Reason("screen_locked", "screen locked: input ignored"))
    elif reading.input_idle.known:
        input_idle = float(reading.input_idle.value)  # type: ignore[arg-type]
    elif limits.require_input:
        now_reasons.append(Reason("input_unknown", f"input idle time unknown: "
                                                   f"{reading.input_idle.unknown}"))
    else:
        notes.append(Reason("input_unknown", f"input not judged: {reading.input_idle.unknown}"))

    _above(reading.others_cpu, limits.cpu_busy_percent, "cpu", "others use {:.0f} % CPU",
           now_reasons, notes, unknown_is_busy=True)
    _above(reading.others_gpu, limits.gpu_busy_percent, "gpu", "others use {:.0f} % GPU",
           now_reasons, notes, unknown_is_busy=False)
    _above(reading.others_memory, limits.memory_busy_percent, "memory",
           "others use {:.0f} % of memory", now_reasons, notes, unknown_is_busy=True)

    battery = reading.battery
    if battery.known and battery.value is not None and battery.value.present:
        charge = battery.value.percent
        if battery.value.plugged is False and not limits.run_on_battery:
            now_reasons.append(Reason("battery", "on battery"))
        if charge is not None and charge < limits.battery_floor_percent:
            now_reasons.append(Reason("battery_low", f"battery {charge:.0f} % is below "
                                                     f"{limits.battery_floor_percent:.0f} %"))
    elif not battery.known:
        notes.append(Reason("battery_unknown", f"battery not judged: {battery.unknown}"))

    if reading.exclusive.known:
        for name in reading.exclusive.value or ():
            now_reasons.append(Reason("exclusive", f"exclusive program: {name}"))
    else:
        now_reasons.append(Reason("exclusive_unknown", f"exclusive programs unknown: "
                                                       f"{reading.exclusive.unknown}"))
    return now_reasons, notes, input_idle


def _above(measure: Measure[float], limit: float, code: str, text: str,
           reasons: list[Reason], notes: list[Reason], *, unknown_is_busy: bool) -> None:
    if measure.known:
        if measure.value is not None and measure.value > limit:
            reasons.append(Reason(code, text.format(measure.value)))
    elif unknown_is_busy:
        reasons.append(Reason(f"{code}_unknown", f"{code} use unknown: {measure.unknown}"))
    else:
        notes.append(Reason(f"{code}_unknown", f"{code} not judged: {measure.unknown}"))


def _host_evidence(host: Measure[Any], limits: Thresholds
                   ) -> tuple[list[Reason], list[Reason], float | None]:
    report = host.value
    if not host.known or report is None:
        return [Reason("sensor_unreadable", f"sensor file: {host.unknown}")], [], None
    if report.problem:
        return [Reason("sensor_invalid", f"sensor file: {report.problem}")], [], None
    if limits.sensor_max_age and report.age > limits.sensor_max_age:
        return [Reason("sensor_stale", f"sensor file is {_secs(report.age)} old "
                                       f"(limit {_secs(limits.sensor_max_age)})")], [], None
    notes = [Reason("host", f"host: {text}") for text in report.reasons]
    if report.idle_seconds is not None:  # the host says how long the owner has been away
        return [], notes, report.idle_seconds + report.age
    if report.state == "busy":
        return [Reason("host_busy", "host sensor says busy")], notes, None
    return [], notes, None


class Policy:
    """The owner-state machine. Feed it readings in time order; it never does I/O."""

    def __init__(self, limits: Thresholds | None = None) -> None:
        self.limits = limits or Thresholds()
        self.state = OwnerState.BUSY
        self.last_seen: float | None = None  # monotonic time the owner was last seen
        self.busy_since: float | None = None

    def update(self, reading: Reading, holds: tuple[Reason, ...] = ()) -> Decision:
        """The state after ``reading``. ``holds`` (the volunteer's pause, snooze or
        schedule) keep it busy without counting as the owner being present, so work
        starts as soon as they lift if the owner has been away long enough."""
        now = reading.at
        limits = self.limits
        reasons, notes, input_idle = evidence(reading, limits)
        seen = [now] if reasons else []
        if input_idle is not None and math.isfinite(input_idle):
            seen.append(now - max(0.0, input_idle))
        if seen:
            newest = max(seen)
            self.last_seen = newest if self.last_seen is None else max(self.last_seen, newest)
        elif self.last_seen is None:
            self.last_seen = now  # nothing known yet: start counting from now
        away_for = max(0.0, now - self.last_seen)
        locked = any(note.code == "screen_locked" for note in notes)
        needed = min(limits.idle_after, limits.locked_idle_after) if locked else limits.idle_after

        previous = self.state
        reasons = [*holds, *reasons]
        if reasons or away_for < needed:
            if self.busy_since is None:
                self.busy_since = now
            busy_for = now - self.busy_since
            self.state = (OwnerState.PREEMPTING if busy_for >= limits.preempt_after
                          else OwnerState.BUSY)
            if not reasons:
                reasons = [Reason("waiting", f"owner away {_secs(away_for)} of "
                                             f"{_secs(needed)} needed")]
                if input_idle is not None and input_idle < needed:
                    reasons = [Reason("input", f"input {_secs(input_idle)} ago"), *reasons]
        else:
            self.busy_since = None
            busy_for = 0.0
            self.state = OwnerState.IDLE
        return Decision(self.state, tuple(reasons), tuple(notes), away_for, busy_for,
                        changed=self.state is not previous)
