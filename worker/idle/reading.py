"""One timestamped snapshot of every owner signal, and the value each signal gives.

A signal that cannot be measured gives ``Measure.missing(why)``: unknown,
never "idle". The policy (``worker.policy``) decides what unknown means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Measure(Generic[T]):
    """A measured ``value`` from ``source``, or ``unknown`` saying why there is none."""

    value: T | None = None
    source: str = ""
    unknown: str | None = None

    @classmethod
    def of(cls, value: T, source: str = "") -> Measure[T]:
        return cls(value=value, source=source)

    @classmethod
    def missing(cls, why: str, source: str = "") -> Measure[T]:
        return cls(source=source, unknown=why)

    @property
    def known(self) -> bool:
        return self.unknown is None

    def to_json(self) -> dict[str, Any]:
        if not self.known:
            return {"unknown": self.unknown, "source": self.source}
        value = self.value
        if hasattr(value, "__dataclass_fields__"):
            value = asdict(value)  # type: ignore[arg-type]
        return {"value": value, "source": self.source}


NOT_SAMPLED: Measure[Any] = Measure.missing("not sampled")


@dataclass(frozen=True)
class Battery:
    """``present`` False: the machine has no battery (a measured fact)."""

    present: bool
    percent: float | None = None
    plugged: bool | None = None


@dataclass(frozen=True)
class HostReport:
    """What the host-side sensor file says (DESIGN.md contract 5).

    ``problem`` is set when the file is missing, unreadable or unknown; the
    owner then counts as busy. ``age`` is seconds since the file was written.
    ``idle_seconds`` is how long the host has seen no owner, when it says.
    """

    state: str
    age: float
    idle_seconds: float | None = None
    reasons: tuple[str, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class Reading:
    """Every signal at one moment: ``at`` on the monotonic clock, ``wall`` in epoch seconds.

    A local reading fills the detector fields; a file reading (a worker in a
    container) fills only ``host``.
    """

    at: float
    wall: float
    input_idle: Measure[float] = NOT_SAMPLED
    screen_locked: Measure[bool] = NOT_SAMPLED
    others_cpu: Measure[float] = NOT_SAMPLED
    others_gpu: Measure[float] = NOT_SAMPLED
    others_memory: Measure[float] = NOT_SAMPLED
    battery: Measure[Battery] = NOT_SAMPLED
    exclusive: Measure[tuple[str, ...]] = NOT_SAMPLED
    host: Measure[HostReport] | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    SIGNALS = ("input_idle", "screen_locked", "others_cpu", "others_gpu", "others_memory",
               "battery", "exclusive")

    def to_json(self) -> dict[str, Any]:
        signals = {name: getattr(self, name).to_json() for name in self.SIGNALS}
        if self.host is not None:
            signals = {"host": self.host.to_json()}
        return {"wall": round(self.wall, 3), "signals": signals, "details": self.details}
