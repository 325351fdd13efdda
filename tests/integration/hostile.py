"""A hostile volunteer, in plain redis-py: only its own credentials, no idle-accel worker.

``Hostile`` logs in with the broker URL its enrollment gave it (Redis user
``vol-NAME``, confined by ACL to ``vol:NAME:*``) and does what a stranger
with that URL could do: keep a fake status report alive so the coordinator
gives it work, take its tasks from its own queue (kombu JSON envelopes) and
drop, hoard or answer them wrongly, lie in its own namespace, and try every
key and channel outside it. ``refused`` runs one command and tells whether
Redis refused it with NOPERM; every attempt is kept in ``attempts``.

``EventTap`` listens on the team's event channels as Flower would;
``PidboxForger`` tries to answer the team's remote control in a worker's
name (it needs the team's pidbox channel and reply queues, which the ACL
refuses).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

#: Marks what a hostile volunteer forged, so a test can tell it from genuine traffic.
FORGED = "forged-by-a-hostile-volunteer"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Task:
    """One task message as a volunteer finds it in its queue."""

    raw: bytes
    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    tag: str


def parse_task(raw: bytes) -> Task:
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    headers, properties = envelope["headers"], envelope["properties"]
    return Task(raw=raw, id=headers["id"], name=headers["task"], args=body[0], kwargs=body[1],
                tag=str(properties.get("delivery_tag")))


def envelope(body: Any, *, headers: dict[str, Any] | None = None,
             routing_key: str = "", exchange: str = "") -> bytes:
    """A kombu JSON message (base64 body), as kombu's Redis transport stores and publishes it."""
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": headers or {},
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                       "delivery_mode": 2, "priority": 0,
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key}},
    }).encode()


def raw_envelope(body: str, *, headers: dict[str, Any] | None = None) -> bytes:
    """A kombu JSON message whose body is ``body`` as it is (any text, JSON or not)."""
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": headers or {},
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }).encode()


#: JSON nested deeper than Python's recursion limit (valid in shape, 5 KB).
TOO_DEEP = "[" * 5000 + "]" * 5000


def task_event(kind: str, task_id: str, hostname: str, **fields: Any) -> bytes:
    """A Celery task event (``task-succeeded`` ...) in its kombu envelope."""
    body = {"type": kind, "uuid": task_id, "hostname": hostname, "timestamp": time.time(),
            "utcoffset": 0, "pid": 4242, "clock": 1, "local_received": time.time(), **fields}
    return envelope(body, routing_key=kind.replace("-", "."), exchange="celeryev")


def task_meta(task_id: str, result: Any, status: str = "SUCCESS") -> str:
    """A result record as Celery's Redis backend stores it."""
    return json.dumps({"status": status, "result": result, "traceback": None, "children": [],
                       "date_done": None, "task_id": task_id})


def decode_event(payload: bytes) -> Any:
    return json.loads(base64.b64decode(json.loads(payload)["body"]))


class Hostile:
    """A volunteer gone bad: its own broker URL, and nothing else.

    ``mode`` says what it does with tasks assigned to it (polled every 0.1 s):
    ``hoard`` leaves them in its queue; ``drop`` pops one and throws it away,
    then deletes its queue with the rest in it; ``lie`` answers each with
    ``liar(task)`` as a SUCCESS result; ``squat`` pops each into its own
    ``unacked`` and keeps its lease fresh, never answering.
    """

    def __init__(self, name: str, url: str, *, node: str | None = None,
                 concurrency: int = 2, queues: tuple[str, ...] = ("cpu",),
                 hardware: dict[str, Any] | None = None) -> None:
        self.name = name
        self.url = url
        self.ns = f"vol:{name}:"
        self.node = node or f"{name}@evil"
        self.concurrency = concurrency
        self.queues = list(queues)
        self.hardware = hardware or {"cores": 2, "ram_bytes": 2**30, "gpus": []}
        self.report_overrides: dict[str, Any] = {}  # what its kept-alive report also says
        self.client = self.connect()
        self.attempts: list[tuple[tuple[Any, ...], str]] = []  # (command, outcome)
        self.mode = "hoard"
        self.liar: Callable[[Task], Any] = lambda task: {"sha256": "0" * 64, "rounds": 1}
        self.popped: dict[str, Task] = {}  # drop: taken from its queue and thrown away
        self.deleted: dict[str, Task] = {}  # drop: in its queue when it deleted the queue
        self.answered: dict[str, Task] = {}  # lie: answered wrongly
        self.squatted: dict[str, Task] = {}  # squat: held, lease renewed, never answered
        self.on_task: Callable[[Task], None] | None = None  # called for each task it takes
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- Redis --------------------------------------------------------------------------------

    def connect(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def refused(self, *command: Any) -> bool:
        """Run ``command``: True when Redis refused it with NOPERM, False when it ran."""
        try:
            self.client.execute_command(*command)
        except redis.exceptions.NoPermissionError:
            self.attempts.append((command, "NOPERM"))
            return True
        self.attempts.append((command, "ran"))
        return False

    def publish_refused(self, channel: str, payload: bytes | str) -> bool:
        return self.refused("PUBLISH", channel, payload)

    def subscribe_refused(self, channel: str) -> bool:
        """SUBSCRIBE ``channel``: True when Redis refused it (NOPERM)."""
        pubsub = self.connect().pubsub()
        try:
            pubsub.subscribe(channel)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message["type"] == "subscribe":
                    return False
        except redis.exceptions.NoPermissionError:
            return True
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()
        raise AssertionError(f"SUBSCRIBE {channel}: neither confirmed nor refused")

    # -- its status report --------------------------------------------------------------------

    def report(self, **overrides: Any) -> dict[str, Any]:
        document = {"node": self.node, "at": time.time(), "state": "idle",
                    "queues": self.queues, "consuming": self.queues,
                    "concurrency": self.concurrency, "running": 0, "suspended": 0,
                    "host": "evil", "hardware": self.hardware, "mode": "volunteer",
                    "reasons": []}
        document.update(overrides)
        return document

    def report_key(self, suffix: str | None = None) -> str:
        return f"{self.ns}idle-accel:worker:{suffix or self.node}"

    def write_report(self, suffix: str, value: Any, ttl: int = 30) -> None:
        """A report of its own (any content) under its namespace's worker keys."""
        text = value if isinstance(value, str | bytes) else json.dumps(value)
        self.client.set(self.report_key(suffix), text, ex=ttl)

    # -- its tasks ----------------------------------------------------------------------------

    def queue_key(self, queue: str = "cpu") -> str:
        return self.ns + queue

    def answer(self, task_id: str, result: Any, status: str = "SUCCESS") -> None:
        """Store a result in its namespace and publish it, as Celery's Redis backend does."""
        key = f"{self.ns}celery-task-meta-{task_id}"
        meta = task_meta(task_id, result, status)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, meta, ex=3600)
        pipe.publish(key, meta)
        pipe.execute()

    def publish_event(self, kind: str, task_id: str, hostname: str, **fields: Any) -> None:
        channel = f"{self.ns}/0.celeryev/{kind.replace('-', '.')}"
        self.client.publish(channel, task_event(kind, task_id, hostname, **fields))

    def _work_once(self) -> None:
        client = self.client
        for queue in self.queues:
            key = self.queue_key(queue)
            if self.mode == "hoard" or not client.llen(key):
                continue
            if self.mode == "drop":
                time.sleep(0.2)  # let the coordinator finish placing this round
                raw = client.rpop(key)
                if raw is not None:
                    task = parse_task(raw)
                    self.popped[task.id] = task
                    self._taken(task)
                rest = [parse_task(r) for r in client.lrange(key, 0, -1)]
                if rest and client.delete(key):
                    for task in rest:
                        self.deleted[task.id] = task
                        self._taken(task)
                continue
            while (raw := client.rpop(key)) is not None:
                task = parse_task(raw)
                self._taken(task)
                if self.mode == "lie":
                    self.answered[task.id] = task
                    self.answer(task.id, self.liar(task))
                elif self.mode == "squat":
                    self.squatted[task.id] = task
                    client.hset(self.ns + "unacked", task.tag,
                                json.dumps([_text(raw), "", queue]))
        if self.squatted:
            client.zadd(self.ns + "unacked_index",
                        {task.tag: time.time() for task in self.squatted.values()})

    def _taken(self, task: Task) -> None:
        if self.on_task is not None:
            self.on_task(task)

    # -- threads ------------------------------------------------------------------------------

    def _loop(self, every: float, body: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                body()
            except redis.RedisError as exc:  # disabled, or a refusal: keep trying, keep count
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(every)

    def _spawn(self, every: float, body: Callable[[], None], what: str) -> None:
        thread = threading.Thread(target=self._loop, args=(every, body), daemon=True,
                                  name=f"hostile-{self.name}-{what}")
        self._threads.append(thread)
        thread.start()

    def start(self, *, report: bool = True, work: bool = True) -> Hostile:
        """Keep its fake report alive (every 0.5 s) and handle its tasks (every 0.1 s)."""
        if report:
            self._spawn(0.5, lambda: self.client.set(self.report_key(), json.dumps(
                self.report(**self.report_overrides)), ex=5), "report")
        if work:
            self._spawn(0.1, self._work_once, "work")
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.client.close()


@dataclass
class EventTap:
    """The team's view of task events (Flower's): ``/0.celeryev/*`` on the team's Redis."""

    client: redis.Redis
    events: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EventTap:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("/0.celeryev/*")

        def listen() -> None:
            try:
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        found = decode_event(message["data"])
                        # Celery's workers send buffered task events as one list (task-multi).
                        for event in found if isinstance(found, list) else [found]:
                            if isinstance(event, dict):
                                self.events.append(event)
            finally:
                pubsub.close()

        self._thread = threading.Thread(target=listen, daemon=True, name="event-tap")
        self._thread.start()
        return self

    def about(self, task_id: str) -> list[dict[str, Any]]:
        return [event for event in list(self.events) if event.get("uuid") == task_id]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.client.close()


class PidboxForger:
    """Answers the team's remote control in another worker's name, both ways it could.

    1. The team's own pidbox channel (``/0.celery.pidbox``): for each broadcast
       it pushes ``{node: {"ok": "pong"}}`` with the broadcast's ticket onto the
       team's reply queue ``ROUTING_KEY.reply.celery.pidbox``. Confined to its
       namespace, the SUBSCRIBE is refused (``refused`` counts the refusals).
    2. The broadcasts the coordinator relays into its namespace
       (``vol:NAME:/0.celery.pidbox``, allowed): it answers in its namespace's
       reply queue, which the coordinator carries back to the team
       (``forged`` counts those answers). ``answer(client, queue, ticket,
       reply_to)`` writes one; the default pushes the forged pong.
    """

    def __init__(self, hostile: Hostile, node: str,
                 answer: Callable[[redis.Redis, str, str, dict[str, Any]], None] | None = None
                 ) -> None:
        self.hostile = hostile
        self.node = node
        self.answer = answer or self.pong
        self.refused = 0
        self.forged = 0
        self.forged_in_team_queue = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=("/0.celery.pidbox", ""), daemon=True,
                             name="pidbox-forger-team"),
            threading.Thread(target=self._run, args=(f"{hostile.ns}/0.celery.pidbox",
                                                     hostile.ns), daemon=True,
                             name="pidbox-forger-own")]

    def pong(self, client: redis.Redis, queue: str, ticket: str,
             reply_to: dict[str, Any]) -> None:
        client.lpush(queue, envelope(
            {self.node: {"ok": "pong"}}, headers={"ticket": ticket, "clock": 1},
            exchange=reply_to["exchange"], routing_key=reply_to["routing_key"]))

    def _forge(self, prefix: str, payload: bytes) -> None:
        try:
            body = decode_event(payload)
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(body, dict):
            return
        reply_to, ticket = body.get("reply_to") or {}, body.get("ticket")
        if not isinstance(reply_to, dict) or not reply_to or not ticket:
            return
        queue = f"{prefix}{reply_to['routing_key']}.{reply_to['exchange']}"
        self.answer(self.hostile.client, queue, ticket, reply_to)
        if prefix:
            self.forged += 1
        else:
            self.forged_in_team_queue += 1

    def _run(self, channel: str, prefix: str) -> None:
        while not self._stop.is_set():
            pubsub = self.hostile.connect().pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None:
                        self._forge(prefix, message["data"])
            except redis.exceptions.NoPermissionError:
                self.refused += 1
                self._stop.wait(0.2)
            except redis.RedisError:
                self._stop.wait(0.2)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def start(self) -> PidboxForger:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
