"""What crosses namespaces besides tasks: fleet mode in, status reports and events out.

- **Remote control**: the team's broadcasts (``celery inspect``, ``idle-accel
  ping``, ``revoke``, the emergency switch) are republished into every
  namespace, for the commands in :data:`RELAYED` only (never ``shutdown``,
  consumer or pool changes: those are the volunteer's); each answer is carried
  back with its hostname forced to the volunteer's node.
- **Fleet mode** (``idle-accel fleet emergency on|off`` writes it for the team):
  copied into every volunteer's namespace, where its workers read it on each
  status report, so they switch to the emergency queues within a report
  interval; the coordinator itself serves them only emergency work meanwhile.
- **Status reports**: each volunteer worker's report, cleaned
  (``reports.clean``) and named after its volunteer, is republished under the
  team's keys, so ``idle-accel fleet status`` and the metrics show every
  volunteer, and no volunteer can pose as another worker.
- **Results and events** (one pub/sub connection): a result a volunteer's
  worker publishes is a hint to check that assignment now; its task and worker
  events are republished on the team's event channel with the hostname forced
  to the volunteer's node, for tasks it holds only, so Flower shows every
  volunteer and its tasks and nothing a volunteer did not run. Each
  volunteer's messages are counted: past the quota it is disabled (``quota.py``).

A regional coordinator (``--region``) relays between two Redis servers: the
fleet mode, the team's broadcasts, the republished reports, events and answers
are the team's (``team``); the namespaces and their pub/sub are the region's
(``client``), heard by a second listener.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

import redis

from compute import keys
from compute.coordinator.reports import node_for

log = logging.getLogger(__name__)

RESULT_PATTERN = "vol:*:celery-task-meta-*"
EVENT_PATTERN = "vol:*:/*.celeryev/*"
PIDBOX_PATTERN = "/*.celery.pidbox"
#: Remote-control commands the team may send volunteers' workers.
RELAYED = ("ping", "stats", "active_queues", "active", "reserved", "scheduled", "registered",
           "report", "revoke", "idle_accel_fleet_mode")
REPLY_EXCHANGE = "reply.celery.pidbox"
#: How long answers to one broadcast are carried back (seconds).
REPLY_WINDOW = 10.0
#: Answers carried from one volunteer per broadcast (one per worker; a volunteer runs a
#: few): the rest are dropped, so no volunteer can fill the team's reply queue.
MAX_ANSWERS = 8
_SEP = "\x06\x16"
MAX_EVENT_BYTES = 64 * 1024
#: Event types a volunteer's worker may send (Celery's own).
EVENT_TYPES = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
               "task-rejected", "task-revoked", "task-retried", "worker-online",
               "worker-heartbeat", "worker-offline")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open(payload: bytes) -> tuple[dict[str, Any], Any] | None:
    """A kombu message from a volunteer: (envelope, decoded body), or None if it is none."""
    if len(payload) > MAX_EVENT_BYTES:
        return None
    try:
        envelope = json.loads(payload)
        return envelope, json.loads(base64.b64decode(envelope["body"], validate=True))
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: too deep
        return None


def _close(envelope: dict[str, Any], body: Any) -> bytes:
    envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(envelope).encode()


def _event(volunteer: str, body: Any, allowed: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or body.get("type") not in EVENT_TYPES:
        return None
    if body["type"].startswith("task-") and not allowed(str(body.get("uuid"))):
        return None
    return {**body, "hostname": node_for(volunteer, body.get("hostname"))}


def rewrite_event(volunteer: str, payload: bytes, allowed: Any) -> bytes | None:
    """A volunteer's event as the team may see it, or None (malformed, foreign, too big).

    Celery's workers buffer task events and send them as one ``task-multi``
    message (a list): each event in it is judged on its own.
    """
    opened = _open(payload)
    if opened is None:
        return None
    envelope, body = opened
    if isinstance(body, list):
        events = [e for e in (_event(volunteer, item, allowed) for item in body[:100]) if e]
        return _close(envelope, events) if events else None
    event = _event(volunteer, body, allowed)
    return _close(envelope, event) if event else None


def rewrite_reply(volunteer: str, payload: bytes) -> bytes | None:
    """A volunteer's answer to remote control, under its own node name only, or None."""
    opened = _open(payload)
    if opened is None or not isinstance(opened[1], dict) or len(opened[1]) != 1:
        return None
    envelope, body = opened
    ((hostname, answer),) = body.items()
    return _close(envelope, {node_for(volunteer, hostname): answer})


class Relay:
    def __init__(self, coordinator: Any, client: Any, team: Any = None) -> None:
        self.coordinator = coordinator
        self.client = client  # the volunteers' Redis
        self.team = team if team is not None else client
        self.counts: Counter[str] = Counter()  # pub/sub messages per volunteer since reset
        self.recent: OrderedDict[str, None] = OrderedDict()  # members finished lately
        self.pending: dict[str, float] = {}  # reply queue of a relayed broadcast -> until
        self.answers: Counter[tuple[str, str]] = Counter()  # (volunteer, reply queue) -> carried
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- in: fleet mode -----------------------------------------------------------------------

    def fleet_mode(self) -> bool:
        """Copy the fleet's mode into every active namespace; True in emergency mode."""
        raw = self.team.get(keys.FLEET_MODE)
        try:
            emergency = bool(raw) and bool(json.loads(raw).get("emergency"))
        except (ValueError, AttributeError):
            emergency = False
        pipe = self.client.pipeline(transaction=False)
        for volunteer in self.coordinator.roster.active():
            key = volunteer.ns + keys.FLEET_MODE
            pipe.set(key, raw) if emergency else pipe.delete(key)
        pipe.execute()
        return emergency

    # -- out: status reports ------------------------------------------------------------------

    def publish_reports(self, volunteers: list[Any]) -> None:
        ttl = max(15, int(3 * self.coordinator.config.sweep_interval))
        held = Counter(a.volunteer for a in self.coordinator.cache.values())
        pipe = self.team.pipeline(transaction=False)
        for volunteer in volunteers:
            for report in volunteer.reports:
                document = {**report, "assigned": held[volunteer.name]}
                pipe.set(keys.worker(report["node"]), json.dumps(document), ex=ttl)
        pipe.execute()

    # -- out: results (hints) and events ------------------------------------------------------

    def finished(self, member: str) -> None:
        self.recent[member] = None
        while len(self.recent) > 10_000:
            self.recent.popitem(last=False)

    def _allowed(self, volunteer: str) -> Any:
        cache = self.coordinator.cache
        return lambda task_id: (f"{volunteer}/{task_id}" in cache
                                or f"{volunteer}/{task_id}" in self.recent)

    # -- remote control: broadcasts in, answers out ----------------------------------------------

    def relay_broadcast(self, channel: str, payload: bytes) -> None:
        """Republish one of the team's broadcasts into every namespace, if it may go there."""
        try:
            body = json.loads(base64.b64decode(json.loads(payload)["body"], validate=True))
            method, reply_to = body["method"], body.get("reply_to") or {}
        except (ValueError, KeyError, TypeError):
            return
        if method not in RELAYED:
            return
        oid = reply_to.get("routing_key") if isinstance(reply_to, dict) else None
        pipe = self.client.pipeline(transaction=False)
        for volunteer in self.coordinator.roster.active():
            if isinstance(oid, str) and oid:
                # The answer's route inside the namespace, as the team's client declared it.
                table = f"{volunteer.ns}_kombu.binding.{REPLY_EXCHANGE}"
                pipe.sadd(table, _SEP.join([oid, "", f"{oid}.{REPLY_EXCHANGE}"]))
                pipe.expire(table, int(REPLY_WINDOW * 6))
            pipe.publish(volunteer.ns + channel, payload)
        pipe.execute()
        if isinstance(oid, str) and oid:
            self.pending[oid] = time.monotonic() + REPLY_WINDOW
            for key in [k for k in self.answers if k[1] == oid]:
                del self.answers[key]

    def carry_replies(self) -> int:
        """Move volunteers' answers to relayed broadcasts to the team, hostnames forced."""
        now = time.monotonic()
        for oid in [o for o, until in self.pending.items() if until < now]:
            del self.pending[oid]
            for key in [k for k in self.answers if k[1] == oid]:
                del self.answers[key]
        if not self.pending:
            return 0
        volunteers = self.coordinator.roster.active()
        pipe = self.client.pipeline(transaction=False)
        keys_read = [(v.name, oid) for oid in self.pending for v in volunteers]
        for name, oid in keys_read:
            pipe.lpop(f"vol:{name}:{oid}.{REPLY_EXCHANGE}", 16)
        moved = 0
        out = self.team.pipeline(transaction=False)
        for (name, oid), found in zip(keys_read, pipe.execute(raise_on_error=False),
                                      strict=True):
            if not isinstance(found, list):  # none, or the volunteer's garbage
                continue
            for raw in found:
                answer = rewrite_reply(name, raw)
                if answer is not None and self.answers[(name, oid)] < MAX_ANSWERS:
                    self.answers[(name, oid)] += 1
                    out.rpush(f"{oid}.{REPLY_EXCHANGE}", answer)
                    moved += 1
        if moved:
            out.execute()
        return moved

    def on_message(self, channel: str, data: Any) -> None:
        if channel.endswith(".celery.pidbox") and channel.startswith("/"):
            self.relay_broadcast(channel, data if isinstance(data, bytes) else str(data).encode())
            return
        if not channel.startswith("vol:"):
            return
        volunteer, rest = channel[4:].split(":", 1) if ":" in channel[4:] else ("", "")
        if not volunteer:
            return
        self.counts[volunteer] += 1
        if rest.startswith("celery-task-meta-"):
            self.coordinator.hint(volunteer, rest[len("celery-task-meta-"):])
        elif ".celeryev/" in rest and self.coordinator.config.relay_events:
            payload = data if isinstance(data, bytes) else str(data).encode()
            event = rewrite_event(volunteer, payload, self._allowed(volunteer))
            if event is not None:
                self.team.publish(rest, event)

    def _listen(self, client: Any, patterns: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(*patterns)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    try:
                        self.on_message(_text(message["channel"]), message["data"])
                    except redis.ConnectionError:
                        raise
                    except Exception as exc:  # one odd message must not deafen the relay
                        log.debug("message on %s not relayed: %r", message["channel"], exc)
            except Exception as exc:  # Redis restarting: listen again
                if not self._stop.is_set():
                    log.debug("pub/sub listener: %s; reconnecting", exc)
                    time.sleep(0.5)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception as exc:
                        log.debug("pub/sub close: %s", exc)

    def start(self) -> None:
        self._stop.clear()
        if self.team is self.client:
            listeners = [(self.client, (RESULT_PATTERN, EVENT_PATTERN, PIDBOX_PATTERN))]
        else:  # a region: volunteers on its Redis, the team's broadcasts on the team's
            listeners = [(self.client, (RESULT_PATTERN, EVENT_PATTERN)),
                         (self.team, (PIDBOX_PATTERN,))]
        self._threads = [threading.Thread(target=self._listen, args=listener,
                                          name=f"idle-accel-relay-{i}", daemon=True)
                         for i, listener in enumerate(listeners)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3)
