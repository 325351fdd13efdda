"""``idle-accel coordinator``: the trusted half between the team's queues and volunteers.

BOINC's scheduler, transitioner, validator and credit granter, on Celery and
Redis. Each step of its loop:

1. **sweep** (every ``sweep_interval``): who is enrolled, what their workers
   report (owner idle or busy, queues, pool size), how many connections they
   hold; relay the fleet's mode into every namespace and republish the
   reports for ``fleet status``; then check every open assignment:
   its result, its lease (the volunteer's worker renews it while it holds the
   task), whether it still waits in the volunteer's queue. A volunteer that
   vanished, froze, dropped the task or missed the deadline loses it and the
   task goes back to the front of the team's queue; work waiting in the queue
   of a volunteer whose owner came back goes back too.
2. **results**, as soon as a volunteer's worker stores one (pub/sub hint,
   checked against the stored record): accepted only for an open assignment
   of that volunteer; stored as the team's result with its continuations
   (``completion.py``), or recorded as a verified replica's outcome; credit
   granted from it.
3. **assign**: each idle volunteer gets work from the team queues it serves
   (region from its enrollment, emergency mode, a verified task's replicas on
   distinct volunteers) up to its idle pool size plus ``ahead``.
4. **quotas** (``quota.py``) and **events** (``relay.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import queue as queue_mod
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis
from celery import states

from compute import keys, verify
from compute import queues as q
from compute.coordinator import completion, envelope, regions, registry
from compute.coordinator.envelope import MalformedMessage, TeamMessage
from compute.coordinator.ledger import FENCED, Assignment, Ledger
from compute.coordinator.lock import Lock
from compute.coordinator.quota import Quotas
from compute.coordinator.relay import Relay
from compute.coordinator.volunteers import Roster, Volunteer
from compute.errors import PayloadTooLarge, VerificationFailed
from compute.quorum import Outcome
from worker import credit

log = logging.getLogger(__name__)

#: Header of a team message that failed on volunteers: who, so it goes to others.
FAILED_ON_HEADER = "idle_accel_failed_on"
#: Team messages the coordinator could not read (kept for an admin, capped).
MALFORMED = f"{keys.PREFIX}coordinator:malformed"
FINAL = (states.SUCCESS, states.FAILURE)


@dataclass(frozen=True)
class Config:
    """How the coordinator paces and polices its volunteers (each a CLI flag)."""

    interval: float = 0.05  # longest wait between steps when nothing happens
    sweep_interval: float = 1.0
    lease_timeout: float = 8.0  # a lease older than this: the volunteer vanished or froze
    missing_grace: float = 3.0  # a task in no queue, lease or result for this long: dropped
    deadline: float = 6 * 3600.0  # an assignment's hard deadline (BOINC's report deadline)
    ahead: int = 1  # tasks queued per volunteer beyond its idle pool processes
    error_quorum: int = 2  # a failure stands once this many volunteers report one
    report_max_age: float = 20.0
    lock_ttl: float = 10.0
    quota_interval: float = 5.0
    quota_bytes: int = 32 * 1024 * 1024
    max_connections: int = 64  # an honest worker opens about 13 + its pool processes
    max_messages_per_second: float = 2000.0  # an honest worker sends ~5 per task
    relay_events: bool = True
    region: str = ""  # serve this region's volunteers, on its own Redis ("": the team's)
    region_timeout: float = 30.0  # a region silent this long is gone: its work goes back


class Coordinator:
    def __init__(self, app: Any, config: Config, client: Any = None,
                 regional: Any = None) -> None:
        """``client``: the team's Redis (team queues, results, verification, credit, fleet
        mode and status); ``regional``: the volunteers' Redis of ``config.region`` (their
        records, namespaces, the ledger, the lock). Without a region both are the team's."""
        self.app = app
        self.config = config
        self.team = client if client is not None else app.backend.client
        self.region = config.region or None
        if self.region and regional is None:
            raise ValueError("a regional coordinator needs its region's Redis client")
        self.client = regional if self.region else self.team
        self.outbox = regions.Outbox(self.team, self.region) if self.region else None
        #: Another region may have run a task too: check the team's result before storing.
        self.duplicates_possible = bool(self.region)
        self._refused: set[str] = set()
        settings = getattr(app, "idle_accel_settings", None)
        self.max_bytes = int(settings.max_message_bytes if settings else 256 * 1024)
        self.ttl = int(app.conf.result_expires or 86_400)
        self.lock = Lock(self.client, config.lock_ttl)
        self.ledger: Ledger | None = None
        self.roster = Roster(config.report_max_age)
        self.cache: dict[str, Assignment] = {}
        self.missing_since: dict[str, float] = {}
        self.started: set[str] = set()  # assignments seen held by their volunteer's worker
        self.hints: queue_mod.SimpleQueue[str] = queue_mod.SimpleQueue()
        self.wake = threading.Event()
        self.relay = Relay(self, self.client, self.team)
        self.quotas = Quotas(self)
        self.stats: Counter[str] = Counter()
        self.emergency = False
        self._swept = 0.0
        self._purged: set[str] = set()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Coordinate until ``stop`` is set (SIGTERM): standby while another one is active."""
        self.relay.start()
        announced = False
        try:
            while not stop.is_set():
                try:
                    if not self.lock.hold():
                        if not announced:
                            log.info("another coordinator is active: standing by")
                            announced = True
                        self.ledger = None
                        stop.wait(1.0)
                        continue
                    if self.ledger is None:
                        self.take_over()
                        announced = False
                    self.step()
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                    log.warning("Redis unreachable (%s): retrying", exc)
                    self.ledger = None
                    self.lock.held = False
                    stop.wait(1.0)
                    continue
                except Exception:  # a bug or a value no check foresaw: never stop the fleet
                    log.exception("coordinator step failed; going on")
                    stop.wait(1.0)
                    continue
                self.wake.wait(self.config.interval)
                self.wake.clear()
        finally:
            self.relay.stop()
            with contextlib.suppress(redis.RedisError):
                self.lock.release()

    def take_over(self) -> None:
        """Become the active coordinator: restore in-flight messages, load the assignments."""
        self.ledger = Ledger(self.client, self.lock.token, self.outbox)
        moved = self.ledger.recover_inboxes()
        self.cache = {a.member: a for a in self.ledger.load(self.ledger.all_members())}
        if self.outbox is not None:
            self.outbox.heartbeat(self.config.region_timeout, every=0.0)
            moved += self.outbox.reconcile(self._out_here())
        self.missing_since.clear()
        self._swept = 0.0
        log.info("coordinator active%s: %d open assignment(s), %d message(s) put back",
                 f" for region {self.region}" if self.region else "", len(self.cache), moved)
        for a in [a for a in self.cache.values() if a.state == "completing"]:
            try:
                self._complete_again(a)
            except redis.ConnectionError:
                raise
            except Exception:  # e.g. a volunteer's garbage: the sweep judges it again
                log.exception("completion of %s not finished", a.member)

    def step(self) -> None:
        now = time.time()
        if now - self._swept >= self.config.sweep_interval:
            self.sweep(now)
            self._swept = now
        for phase in (self.drain_hints, self.relay.carry_replies,
                      lambda: self.assign(time.time()),
                      lambda: self.quotas.maybe_enforce(time.time())):
            if self.ledger is None:  # the lock was lost during this step: stand by
                return
            phase()

    # -- the sweep ----------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        if self.outbox is not None:
            self.outbox.heartbeat(self.config.region_timeout)
        self.roster.refresh(self.client, now)
        self.emergency = self.relay.fleet_mode()
        self.relay.publish_reports(self.roster.active())
        for volunteer in self.roster.by_name.values():
            if volunteer.state == registry.ACTIVE:
                self._purged.discard(volunteer.name)  # enrolled again
            elif volunteer.name not in self._purged:
                self.retire(volunteer.name)
        self.check(list(self.cache.values()), now, full=True)
        self._regions(now)

    def _out_here(self) -> set[str]:
        return {regions.digest(a.message) for a in self.cache.values()}

    def _regions(self, now: float) -> None:
        """Push back what a dead region held; what this region's ledger lost, too; and what
        an inbox holds between two steps."""
        if self.ledger is None:
            return
        stray = self.ledger.recover_stray()
        if stray:
            self.stats["pushed_back"] += stray
            log.warning("%d message(s) taken but never placed (Redis failed between the two "
                        "steps, or a failover lost the placement): back to the team's queues",
                        stray)
        if self.outbox is not None:
            moved = self.outbox.reconcile(self._out_here())
            if moved:
                self.stats["pushed_back"] += moved
                log.warning("%d message(s) out in region %s had no assignment (stopped "
                            "between two steps): back to the team's queues", moved,
                            self.region)
        for count in regions.recover_dead(self.team, self.region).values():
            self.stats["recovered"] += count
        if not self.duplicates_possible and regions.known(self.team):
            self.duplicates_possible = True

    def _serves(self, v: Volunteer) -> bool:
        """A regional coordinator serves only volunteers enrolled in its region."""
        if not self.region or v.region == self.region:
            return True
        if v.name not in self._refused:
            self._refused.add(v.name)
            log.warning("volunteer %s is enrolled in region %s, not %s: refused (enroll it "
                        "again for this region)", v.name, v.region or "(none)", self.region)
        return False

    def retire(self, name: str) -> None:
        """A revoked or disabled volunteer: reissue what it held, drop its namespace's keys."""
        held = [a for a in self.cache.values() if a.volunteer == name]
        for a in held:
            self._void(a, "its volunteer was disabled", fault=False)
        removed = 0
        for key in list(self.client.scan_iter(match=f"vol:{name}:*", count=1000)):
            removed += int(self.client.unlink(key))
        self._purged.add(name)
        log.warning("volunteer %s disabled: %d task(s) reissued, %d key(s) removed", name,
                    len(held), removed)

    def check(self, found: list[Assignment], now: float, *, full: bool) -> None:
        """Look at each assignment's result, lease and queue in one transaction each."""
        if not found:
            return
        pipe = self.client.pipeline(transaction=True)
        limit = 2 * self.max_bytes + 8192
        for a in found:
            pipe.getrange(a.result_key(), 0, limit)
            pipe.zscore(a.ns + keys.UNACKED_INDEX, a.tag)
            pipe.lpos(a.ns + a.queue, a.vmessage) if full else pipe.echo("")
        replies = pipe.execute(raise_on_error=False)
        for i, a in enumerate(found):
            if i % 200 == 0 and not self._still_active():
                return
            raw, lease, position = replies[3 * i: 3 * i + 3]
            errors = [r for r in (raw, lease, position) if isinstance(r, Exception)]
            try:
                if errors:  # the volunteer turned its own keys into something else
                    self._void(a, f"its namespace holds garbage ({errors[0]})")
                    continue
                self._judge(a, raw, lease, position if full else "?", now)
            except redis.RedisError:
                raise
            except Exception:  # one bad record must not stop the fleet: retried next sweep
                log.exception("assignment %s: not judged this time", a.member)

    def _judge(self, a: Assignment, raw: bytes | None, lease: float | None,
               position: Any, now: float) -> None:
        volunteer = self.roster.by_name.get(a.volunteer)
        if a.member not in self.cache:
            return
        if raw:
            if len(raw) > 2 * self.max_bytes + 8192:
                self._void(a, f"its result is over {2 * self.max_bytes} bytes")
                return
            if self._accept(a, bytes(raw), volunteer):
                return
        if volunteer is None or volunteer.state != registry.ACTIVE:
            self._void(a, "its volunteer was disabled", fault=False)
        elif now > a.deadline:
            self._void(a, f"it missed its deadline ({self.config.deadline:.0f} s)")
        elif lease is not None:
            self.missing_since.pop(a.member, None)
            if a.member not in self.started:
                self._started(a, volunteer)
            if now - float(lease) > self.config.lease_timeout:
                self._void(a, f"its lease is {now - float(lease):.1f} s old: the volunteer "
                              "vanished or froze")
            elif volunteer.connections == 0 and now - float(lease) > 2.0:
                self._void(a, "its volunteer has no connection left: it vanished")
        elif position is not None and position != "?":
            self.missing_since.pop(a.member, None)
            if not volunteer.idle or volunteer.benched(now) or (
                    self.emergency and not a.queue.startswith(q.EMERGENCY)):
                self._void(a, "its volunteer's owner is back before it started", fault=False)
        elif position is None:
            since = self.missing_since.setdefault(a.member, now)
            if now - since > self.config.missing_grace:
                self._void(a, "the volunteer dropped it (in no queue, lease or result)")

    def _started(self, a: Assignment, volunteer: Volunteer) -> None:
        """The volunteer's worker holds the task: the team sees it STARTED, as with Celery."""
        self.started.add(a.member)
        # None, or STARTED by a volunteer it was taken from: the team sees the holder now.
        if completion.team_state(self.app, a.task_id) in (None, states.STARTED):
            completion.started(self.app, envelope.parse(a.message), volunteer.node())

    def _void(self, a: Assignment, why: str, *, fault: bool = True,
              instead: bytes = b"") -> None:
        assert self.ledger is not None
        outcome = self.ledger.void(a, instead=instead)
        if outcome == FENCED:
            self._lost_lock()
            return
        if outcome == "completing":
            return
        self._forget(a)
        if outcome == "gone":
            return
        if a.verification:
            self.team.hdel(keys.verification(a.verification), f"owner:{a.replica}")
        self.stats["reissued"] += 1
        log.info("task %s [%s] taken back from %s and reissued: %s", a.name, a.task_id,
                 a.volunteer, why)
        volunteer = self.roster.by_name.get(a.volunteer)
        if fault and volunteer is not None:
            volunteer.fault(time.time(), f"task {a.task_id} reissued: {why}")

    def _forget(self, a: Assignment) -> None:
        self.cache.pop(a.member, None)
        self.missing_since.pop(a.member, None)
        self.started.discard(a.member)
        self.relay.finished(a.member)

    def _still_active(self) -> bool:
        """Keep the lock through a long step (free until a third of its time has passed), and
        the region's heartbeat (at most once a second)."""
        if self.ledger is not None and self.lock.hold():
            if self.outbox is not None:
                self.outbox.heartbeat(self.config.region_timeout)
            return True
        if self.ledger is not None:
            self._lost_lock()
        return False

    def _lost_lock(self) -> None:
        log.warning("the coordinator lock was lost: standing by")
        self.ledger = None
        self.lock.held = False
        self.cache.clear()

    # -- results ------------------------------------------------------------------------------

    def hint(self, volunteer: str, task_id: str) -> None:
        """A volunteer published a result for ``task_id`` (a hint only: it is checked)."""
        self.hints.put(f"{volunteer}/{task_id}")
        self.wake.set()

    def drain_hints(self) -> None:
        members = set()
        with contextlib.suppress(queue_mod.Empty):
            while len(members) < 1000:
                members.add(self.hints.get_nowait())
        found = [self.cache[m] for m in members if m in self.cache]
        self.check(found, time.time(), full=False)

    def _accept(self, a: Assignment, raw: bytes, volunteer: Volunteer | None) -> bool:
        """Accept a stored result of ``a`` if it is final; False when there is none yet."""
        try:
            meta = completion.decode_meta(raw)
        except Exception as exc:
            self._void(a, f"its result is not JSON: {exc}")
            return True
        if not isinstance(meta, dict) or meta.get("task_id") not in (None, a.task_id):
            self._void(a, "its result names another task")
            return True
        status = meta.get("status")
        if status == states.RETRY:
            self._void(a, "the task asked to be retried", fault=False)
            return True
        if status not in FINAL:
            return False
        node = volunteer.node() if volunteer is not None else f"{a.volunteer}@worker"
        message = envelope.parse(a.message)
        if a.verification:
            self._record_replica(a, meta, node)
            return True
        if status == states.FAILURE:
            failed_on = list(message.headers.get(FAILED_ON_HEADER) or [])
            if len({*failed_on, a.volunteer}) < self.config.error_quorum:
                self._void(a, f"it failed there ({_error_text(meta.get('result'))}); "
                              "another volunteer tries it", fault=False,
                           instead=_with_header(message, FAILED_ON_HEADER,
                                                [*failed_on, a.volunteer]))
                return True
        self._complete(a, message, {"status": status, "result": meta.get("result"),
                                    "node": node}, volunteer)
        return True

    def _complete(self, a: Assignment, message: TeamMessage, outcome: dict[str, Any],
                  volunteer: Volunteer | None) -> None:
        assert self.ledger is not None
        marked = self.ledger.completing(a, outcome)
        if marked == FENCED:
            self._lost_lock()
            return
        if marked == "gone":
            self._forget(a)
            return
        already = (marked == "again" or self.duplicates_possible) and \
            completion.team_state(self.app, a.task_id) in FINAL
        if already and marked != "again":
            # It ran twice: its region was declared dead and it went back to the team's
            # queues, and another copy's result was stored first. The team keeps that one.
            self.stats["ran_twice"] += 1
            log.warning("task %s [%s] ran twice: %s's result discarded, the team already "
                        "has one", a.name, a.task_id, a.volunteer)
        if not already:
            if outcome["status"] == states.SUCCESS:
                completion.succeed(self.app, message, outcome["result"], outcome["node"])
            else:
                completion.fail(self.app, message, completion.rebuild_error(outcome["result"]),
                                outcome["node"])
        credit = self._credit(a, volunteer) if outcome["status"] == states.SUCCESS else None
        if self.ledger.finish(a, credit, a.volunteer, self.ttl) == FENCED:
            self._lost_lock()
            return
        self._forget(a)
        self.stats["completed"] += 1
        if volunteer is not None:
            volunteer.good()

    def _complete_again(self, a: Assignment) -> None:
        """A completion a stopped coordinator began: finish it (stores are idempotent)."""
        outcome = json.loads(a.outcome or "{}")
        if not outcome:
            return
        self._complete(a, envelope.parse(a.message), outcome,
                       self.roster.by_name.get(a.volunteer))

    def _credit(self, a: Assignment, volunteer: Volunteer | None) -> tuple[float, float]:
        """The volunteer's claim (CPU s, GPU s), at most what it could have used since assigned."""
        held = max(0.0, time.time() - a.assigned)
        cores = max((r["hardware"]["cores"] for r in volunteer.reports), default=1) \
            if volunteer is not None else 1
        try:
            cpu, gpu = (float(x) for x in (self.client.get(a.claim_key()) or b"0 0").split())
        except (ValueError, redis.ResponseError):  # not two numbers, or not even a string
            cpu = gpu = 0.0
        if not (math.isfinite(cpu) and math.isfinite(gpu)):
            cpu = gpu = 0.0
        return (min(max(cpu, 0.0), held * cores), min(max(gpu, 0.0), held))

    # -- verified results ---------------------------------------------------------------------

    def _record_replica(self, a: Assignment, meta: dict[str, Any], node: str) -> None:
        assert self.ledger is not None
        failed = meta.get("status") == states.FAILURE
        outcome = Outcome(replica=a.replica or a.task_id, host=a.volunteer, node=node,
                          result=None if failed else meta.get("result"),
                          error=_error_text(meta.get("result")) if failed else None)
        marked = self.ledger.completing(a, {"status": "REPLICA", "node": node})
        if marked == FENCED:
            self._lost_lock()
            return
        state = verify.record(self.team, a.verification, outcome)
        credit = None if failed else self._credit(a, self.roster.by_name.get(a.volunteer))
        if credit is not None:
            self.team.hset(keys.verification(a.verification), f"cpu:{a.volunteer}",
                             f"{credit[0]:.6f} {credit[1]:.6f}")
        self.ledger.finish(a, None, a.volunteer, self.ttl)
        self._forget(a)
        if state == "decide":
            verdict = verify.settle(self.app, a.verification, store=False,
                                    extend=lambda new: self._extra_replicas(a, new))
            if verdict is None:
                return
            log.info("verification %s of %s decided: %s", a.verification, a.name,
                     verdict.summary())
            # The verified task's own continuations run once, from the verdict.
            team = dataclasses.replace(envelope.parse(a.message), task_id=a.verification)
            if verdict.agreed and verdict.error is None:
                self._credit_verdict(a.verification, verdict)
                completion.succeed(self.app, team, verdict.value, "coordinator")
            else:
                if verdict.agreed:
                    self._credit_verdict(a.verification, verdict)
                completion.fail(self.app, team, VerificationFailed(
                    f"{a.name}: {verdict.summary()}" if not verdict.agreed else
                    f"{a.name} failed the same way on every host: {verdict.error}"),
                    "coordinator")

    def _extra_replicas(self, a: Assignment, replicas: list[str]) -> None:
        """Send copies of ``a``'s message as ``replicas`` (to the front of its team list)."""
        message = envelope.parse(a.message)
        for replica in replicas:
            self.team.rpush(a.source, _with_header(message, verify.REPLICA_HEADER, replica))
        self.stats["extra_replicas"] += len(replicas)

    def _credit_verdict(self, verification_id: str, verdict: Any) -> None:
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in
                  self.team.hgetall(keys.verification(verification_id)).items()}
        for outcome in verdict.groups[0]:
            claim = fields.get(f"cpu:{outcome.host}", b"0 0")
            cpu, gpu = (float(x) for x in (claim.decode() if isinstance(claim, bytes)
                                           else str(claim)).split())
            credit.record(self.team, outcome.host, f"{verification_id}:{outcome.host}",
                          cpu, gpu, self.ttl)

    # -- assigning ----------------------------------------------------------------------------

    def assign(self, now: float) -> None:
        volunteers = [v for v in self.roster.active()
                      if v.idle and not v.benched(now) and self._serves(v)]
        if not volunteers:
            return
        held: Counter[str] = Counter(a.volunteer for a in self.cache.values())
        wanted = {v.name: v.capacity + self.config.ahead - held[v.name] for v in volunteers}
        candidates = sorted({lst for v in volunteers if wanted[v.name] > 0
                             for name in v.queues(self.emergency)
                             for lst in envelope.priority_lists(name)})
        if not candidates:
            return
        pipe = self.team.pipeline(transaction=False)
        for lst in candidates:
            pipe.llen(lst)
        waiting = {lst for lst, n in zip(candidates, pipe.execute(), strict=True) if n}
        progress = True
        while waiting and progress:
            progress = False
            for v in sorted(volunteers, key=lambda v: held[v.name] - wanted[v.name]):
                if wanted[v.name] <= 0:
                    continue
                if not self._still_active():
                    return
                if self._give(v, waiting, now):
                    wanted[v.name] -= 1
                    held[v.name] += 1
                    progress = True

    def _give(self, v: Volunteer, waiting: set[str], now: float) -> bool:
        """Place one task from the first non-empty team list ``v`` serves; False if none."""
        assert self.ledger is not None
        for name in v.queues(self.emergency):
            for lst in envelope.priority_lists(name):
                if lst not in waiting:
                    continue
                raw = self.ledger.take(lst)
                if raw is None:
                    waiting.discard(lst)
                    continue
                placed = self._place(v, lst, name, bytes(raw), now)
                if placed is None:  # not for this volunteer: put back, try its next list
                    self.ledger.untake(lst, raw)
                    continue
                if placed:
                    return True
        return False

    def _place(self, v: Volunteer, lst: str, queue: str, raw: bytes, now: float
               ) -> bool | None:
        """Assign ``raw`` to ``v``: True placed, False dropped, None not for ``v``."""
        assert self.ledger is not None
        try:
            message = envelope.parse(raw)
        except MalformedMessage as exc:
            self._refuse_malformed(lst, raw, str(exc))
            return False
        if v.name in (message.headers.get(FAILED_ON_HEADER) or []):
            return None
        if len(raw) > self.max_bytes + 16384:
            self._drop(lst, raw)
            completion.fail(self.app, message, PayloadTooLarge(
                f"{message.name}: the message is {len(raw)} bytes, over the "
                f"{self.max_bytes}-byte message limit (IDLE_ACCEL_MAX_MESSAGE_BYTES): pass a "
                "path or URL to the data instead"), "coordinator")
            return False
        replica = ""
        if message.verification:
            replica = str(message.headers.get(verify.REPLICA_HEADER) or message.task_id)
            claimed = verify.claim(self.team, message.verification, replica, v.name)
            if claimed == "other":
                return None
            if claimed != "ok":
                self._drop(lst, raw)
                if claimed == "unknown":
                    completion.fail(self.app, message, VerificationFailed(
                        f"verification {message.verification} has no record in Redis "
                        "(expired, or not sent with verify=k)"), "coordinator")
                return False
        vmessage, tag = envelope.for_volunteer(message, queue)
        a = Assignment(volunteer=v.name, task_id=message.task_id, name=message.name,
                       source=lst, queue=queue, message=raw, vmessage=vmessage, tag=tag,
                       assigned=now, deadline=now + self.config.deadline, replica=replica,
                       verification=message.verification or "")
        placed = self.ledger.place(a)
        if placed == FENCED:
            self._lost_lock()
            return False
        if placed == "garbage":
            v.fault(now, f"its queue {queue} is not a list")
            return None
        if placed != "ok":
            return False
        self.cache[a.member] = a
        self.stats["assigned"] += 1
        return True

    def _drop(self, lst: str, raw: bytes) -> None:
        assert self.ledger is not None
        self.ledger.drop(lst, raw)

    def _refuse_malformed(self, lst: str, raw: bytes, why: str) -> None:
        log.error("Refused malformed message in %s, set aside in %s: %s", lst, MALFORMED, why)
        pipe = self.team.pipeline()
        pipe.lpush(MALFORMED, raw[:65536])
        pipe.ltrim(MALFORMED, 0, 999)
        pipe.execute()
        self._drop(lst, raw)


def _error_text(result: Any) -> str:
    if isinstance(result, dict):
        message = result.get("exc_message")
        text = " ".join(map(str, message)) if isinstance(message, list) else str(message)
        return f"{str(result.get('exc_type'))[:100]}: {text[:500]}"
    return str(result)[:500]


def _with_header(message: TeamMessage, name: str, value: Any) -> bytes:
    """``message``'s bytes with one header set (the body, and so its signature, unchanged)."""
    data = {**message.envelope, "headers": {**message.headers, name: value}}
    return json.dumps(data, separators=(",", ":")).encode()
