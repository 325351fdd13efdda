"""What the coordinator knows of each enrolled volunteer, refreshed every sweep.

Trusted: the enrollment (name, region, state) and what Redis itself says
(its connections). Believed within bounds: its workers' status reports
(``reports.clean``). Its own: the penalty box, where a volunteer that dropped,
swallowed or garbled work waits before it gets more (doubling, BOINC's
per-host quota for hosts that err).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis

from compute import keys
from compute import queues as q
from compute.coordinator import registry, reports

log = logging.getLogger(__name__)

#: A status report is a few hundred bytes; anything past this is not read.
MAX_REPORT_BYTES = 64 * 1024
#: Penalty after a fault: 2 s, doubling per fault in a row, at most 5 minutes.
FIRST_PENALTY, MAX_PENALTY = 2.0, 300.0


@dataclass
class Volunteer:
    name: str
    region: str | None = None
    state: str = registry.ACTIVE
    reports: list[dict[str, Any]] = field(default_factory=list)
    connections: int | None = None  # None: not known (no CLIENT LIST right)
    faults: int = 0
    benched_until: float = 0.0

    @property
    def ns(self) -> str:
        return f"vol:{self.name}:"

    @property
    def idle(self) -> bool:
        return any(r["state"] == "idle" and r["consuming"] for r in self.reports)

    @property
    def capacity(self) -> int:
        """Pool processes of its workers whose owner is away (a volunteer's word, capped)."""
        found = sum(r["concurrency"] for r in self.reports if r["state"] == "idle")
        return min(found, reports.MAX_CONCURRENCY)

    def queues(self, emergency: bool) -> list[str]:
        """The team queues to serve it from, most urgent first, within its enrolled region."""
        found: list[str] = []
        for report in self.reports:
            if report["state"] != "idle":
                continue
            for name in report["consuming"]:
                region = q.region_of(name)
                if region is not None and region != self.region:
                    continue  # pinned elsewhere: a volunteer's word does not move data
                if emergency and not name.startswith(q.EMERGENCY):
                    continue
                if name not in found:
                    found.append(name)
        return sorted(found, key=lambda n: (not n.startswith(q.EMERGENCY),
                                            q.region_of(n) is None, n.count("."), n))

    def node(self) -> str:
        return self.reports[0]["node"] if self.reports else f"{self.name}@worker"

    def benched(self, now: float) -> bool:
        return now < self.benched_until

    def fault(self, now: float, why: str) -> None:
        self.faults += 1
        pause = min(MAX_PENALTY, FIRST_PENALTY * 2 ** (self.faults - 1))
        self.benched_until = now + pause
        log.warning("volunteer %s: %s; no new work for %.0f s", self.name, why, pause)

    def good(self) -> None:
        self.faults = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_reports(client: Any, names: set[str], now: float, max_age: float
                 ) -> dict[str, list[dict[str, Any]]]:
    """Every enrolled volunteer's usable status reports, by volunteer (one keyspace scan)."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keys_found = [k for k in client.scan_iter(match=f"vol:*:{keys.WORKER_PATTERN}", count=1000)]
    if not keys_found:
        return found
    pipe = client.pipeline(transaction=False)
    for key in keys_found:
        pipe.get(key)
    for key, raw in zip(keys_found, pipe.execute(raise_on_error=False), strict=True):
        name = _text(key).split(":", 2)[1]
        if name not in names or not isinstance(raw, bytes) or len(raw) > MAX_REPORT_BYTES:
            continue  # none, not a string, or far too big to be a report
        try:
            found[name].append(reports.clean(name, json.loads(raw), now=now, max_age=max_age))
        except (ValueError, RecursionError, reports.BadReport) as exc:
            log.debug("report %s ignored: %s", _text(key), exc)
    for name in found:
        found[name] = found[name][:8]  # a volunteer runs a few workers, not thousands
    return found


def count_connections(client: Any) -> dict[str, int] | None:
    """Open connections per volunteer (``CLIENT LIST``), or None without the right to ask."""
    try:
        listing = client.client_list()
    except redis.ResponseError as exc:  # a team user without CLIENT LIST: leases alone then
        log.debug("CLIENT LIST refused: %s", exc)
        return None
    counts: dict[str, int] = defaultdict(int)
    for entry in listing:
        user = str(entry.get("user") or "")
        if user.startswith("vol-"):
            counts[user[4:]] += 1
    return counts


class Roster:
    """The enrolled volunteers, refreshed by :meth:`refresh` (records, reports, connections)."""

    def __init__(self, report_max_age: float = 20.0) -> None:
        self.by_name: dict[str, Volunteer] = {}
        self.report_max_age = report_max_age
        self.can_list_clients = True
        self.can_restore_users = True

    def refresh(self, client: Any, now: float | None = None) -> None:
        now = time.time() if now is None else now
        records = registry.records(client)
        if self.can_restore_users:
            try:
                for name in registry.ensure_users(client, records):
                    log.warning("volunteer %s: Redis had lost its user (restarted without "
                                "an ACL file?); restored", name)
            except redis.ResponseError as exc:  # team credentials: no ACL commands
                self.can_restore_users = False
                log.warning("volunteers' Redis users cannot be restored after a Redis "
                            "restart with these credentials: %s", exc)
        for name, record in records.items():
            volunteer = self.by_name.setdefault(name, Volunteer(name))
            volunteer.region = record.get("region") if isinstance(record.get("region"),
                                                                   str) else None
            volunteer.state = str(record.get("state") or registry.DISABLED)
        for name in set(self.by_name) - set(records):
            self.by_name[name].state = registry.DISABLED
        active = {n for n, v in self.by_name.items() if v.state == registry.ACTIVE}
        found = read_reports(client, active, now, self.report_max_age)
        counts = count_connections(client) if self.can_list_clients else None
        self.can_list_clients = counts is not None
        for name, volunteer in self.by_name.items():
            volunteer.reports = found.get(name, [])
            volunteer.connections = counts.get(name, 0) if counts is not None else None

    def active(self) -> list[Volunteer]:
        return [v for v in self.by_name.values() if v.state == registry.ACTIVE]
