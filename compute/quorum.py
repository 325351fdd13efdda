"""The verdict on a verified task's results (BOINC's validator): pure, no Redis, no Celery.

A verified task ran on ``k`` distinct hosts; each replica's outcome is its
JSON result or the error it raised. The outcome is accepted only when all
``k`` agree. Agreement is exact equality of the JSON values, except that
numbers may differ by a relative ``tolerance`` (floating point on different
CPUs and GPUs differs in the last bits; BOINC calls this a fuzzy validator).
An error is an outcome like any other: k hosts that fail the same way agree
that the input is bad.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What one replica produced, and where."""

    replica: str
    host: str
    node: str
    result: Any = None
    error: str | None = None  # "Type: message" when the replica raised


@dataclass(frozen=True)
class Verdict:
    """Agreed (``value`` or ``error`` is the accepted outcome) or not (``groups`` differ)."""

    agreed: bool
    value: Any = None
    error: str | None = None
    #: Replicas grouped by the outcome they agree on, largest group first.
    groups: list[list[Outcome]] = field(default_factory=list)

    def summary(self) -> str:
        if self.agreed:
            hosts = ", ".join(o.node for o in self.groups[0])
            dissent = "".join(f"; dissent: {o.node} (host {o.host}) -> {describe(o, 60)}"
                              for group in self.groups[1:] for o in group)
            return f"{len(self.groups[0])} hosts agree ({hosts}){dissent}"
        parts = [" + ".join(f"{o.node} (host {o.host})" for o in group) + " -> "
                 + describe(group[0]) for group in self.groups]
        return "results disagree: " + "; ".join(parts)


def describe(outcome: Outcome, limit: int = 120) -> str:
    """A short text of an outcome, for reports."""
    text = (f"error {outcome.error}" if outcome.error is not None
            else json.dumps(outcome.result, sort_keys=True, separators=(",", ":")))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def same(a: Any, b: Any, tolerance: float = 0.0) -> bool:
    """Equal JSON values; numbers (not booleans) within a relative ``tolerance``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if a == b:
            return True
        return tolerance > 0 and math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _agree(a: Outcome, b: Outcome, tolerance: float) -> bool:
    if a.error is not None or b.error is not None:
        return a.error == b.error
    return same(a.result, b.result, tolerance)


def decide(outcomes: list[Outcome], k: int, tolerance: float = 0.0) -> Verdict:
    """The verdict on ``k`` outcomes from distinct hosts."""
    if len(outcomes) != k:
        raise ValueError(f"a verdict needs {k} outcomes, got {len(outcomes)}")
    if len({o.host for o in outcomes}) != k:
        raise ValueError("a verdict needs outcomes from distinct hosts")
    groups = grouped(outcomes, tolerance)
    if len(groups) == 1:
        first = groups[0][0]
        return Verdict(True, value=first.result, error=first.error, groups=groups)
    return Verdict(False, groups=groups)


def grouped(outcomes: list[Outcome], tolerance: float = 0.0) -> list[list[Outcome]]:
    """``outcomes`` grouped by the outcome they agree on, largest group first."""
    groups: list[list[Outcome]] = []
    for outcome in sorted(outcomes, key=lambda o: o.replica):
        for group in groups:
            if _agree(group[0], outcome, tolerance):
                group.append(outcome)
                break
        else:
            groups.append([outcome])
    groups.sort(key=len, reverse=True)
    return groups


def adaptive(outcomes: list[Outcome], k: int, cap: int, tolerance: float = 0.0
             ) -> Verdict | int:
    """BOINC's adaptive replication: a verdict, or how many more replicas to send.

    Accepted when ``k`` outcomes from distinct hosts agree; while they do not,
    more replicas go to other hosts, up to ``cap`` outcomes in all. Refused
    (not agreed) when even ``cap`` outcomes could no longer give ``k`` that
    agree. One host counts once (its first outcome).
    """
    first: dict[str, Outcome] = {}
    for outcome in sorted(outcomes, key=lambda o: o.replica):
        first.setdefault(outcome.host, outcome)
    groups = grouped(list(first.values()), tolerance)
    best = len(groups[0]) if groups else 0
    if best >= k:
        winners = groups[0]
        return Verdict(True, value=winners[0].result, error=winners[0].error, groups=groups)
    missing = k - best
    if len(first) + missing > cap:
        return Verdict(False, groups=groups)
    return missing
