"""Simulated enrolled volunteers for ``bench/coordinator.py``: many workers in a few processes.

Each simulated volunteer logs in to Redis as its own ACL user (``vol-NAME``,
created with the registry's own rules) and does, inside its namespace
``vol:NAME:``, what a real ``idle-accel worker`` with one pool process does
that the coordinator sees (the approach of ``bench/broker_scale.py``, whose
payload helpers it reuses):

- two connections: one for the blocking consume, one for every other command;
- every 5 s its status report ``vol:NAME:idle-accel:worker:NAME@sim`` (``SET ... EX
  15``: node, at, state idle, queues/consuming ``["cpu"]``, concurrency 1);
- ``BRPOP`` over ``vol:NAME:cpu`` and its priority twins (kombu's keys), one task at
  a time (prefetch one); kombu times out every 1 s, the default here is 5 s (the
  coordinator never sees it; thousands of idle BRPOPs a second would only load the
  simulator and Redis on the machine the coordinator is measured on);
- per task: ``MULTI ZADD unacked_index, HSET unacked EXEC`` with the envelope's
  ``properties.delivery_tag``; the lease renewed (``ZADD XX``) every 2 s; the
  task "runs" for an exponentially distributed time (``mean_seconds``); then
  ``SETEX + PUBLISH vol:NAME:celery-task-meta-<id>`` with Celery's SUCCESS meta and
  the ack (``MULTI ZREM unacked_index, HDEL unacked EXEC``);
- with ``events`` on, also the rest of what a real worker publishes through
  the coordinator's relay: its heartbeat event every 2 s, the task events
  received/started/succeeded, the STARTED meta (``task_track_started``) and
  the credit claim (``worker/credit.py``'s Lua script).

Not simulated: the pool process's own connections (a real prefork worker holds
several more: ``bench/broker_scale.py --calibrate``), remote-control pidbox
subscriptions, kombu's restore sweep (a volunteer's unacked entries are the
coordinator's business), owners coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker_scale import envelope, heartbeat

from compute import keys, namespace
from compute.coordinator import registry
from worker import credit

PRIORITY_SEP = "\x06\x16"
TASK_EVENTS = "/0.celeryev/task.multi"
HEARTBEAT_CHANNEL = "/0.celeryev/worker.heartbeat"


@dataclass(frozen=True)
class SimConfig:
    mean_seconds: float = 30.0  # mean task duration (exponential)
    lease_every: float = 2.0  # worker/celery_gate.py VOLUNTEER_RENEW_INTERVAL
    status_every: float = 5.0  # IDLE_ACCEL_STATUS_INTERVAL
    heartbeat_every: float = 2.0  # Celery's worker heartbeat
    brpop_timeout: int = 5  # kombu's is 1 s
    events: bool = False


def enroll_many(client: Any, names: list[str], password: str, batch: int = 500) -> None:
    """Enroll ``names`` as ``registry.enroll`` does (ACL user + record), batched in pipelines."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    record = json.dumps({"state": registry.ACTIVE, "enrolled": round(time.time(), 3),
                         "reason": None, "region": None, "password_sha256": digest, "db": 0})
    for start in range(0, len(names), batch):
        pipe = client.pipeline(transaction=False)
        for name in names[start:start + batch]:
            pipe.execute_command("ACL", "SETUSER", namespace.username(name),
                                 *namespace.acl_rules(name, digest, db=0))
        pipe.hset(keys.VOLUNTEERS, mapping={name: record for name in names[start:start + batch]})
        pipe.execute()


def status_document(node: str, held: int) -> str:
    return json.dumps({
        "node": node, "pid": os.getpid(), "host": "sim", "mode": "volunteer", "region": None,
        "queues": ["cpu"], "consuming": ["cpu"], "concurrency": 1, "at": round(time.time(), 3),
        "state": "idle", "reasons": [], "notes": [], "running": held, "suspended": 0,
        "hardware": {"cores": 1, "ram_bytes": 8 * 2**30, "gpus": []},
        "fleet_mode": "normal",
    }, separators=(",", ":"))


def result_meta(task_id: str, node: str, status: str) -> str:
    """Celery's JSON result meta, as its Redis backend stores it."""
    done = status in ("SUCCESS", "FAILURE")
    result = {"hostname": node} if done else {"pid": os.getpid(), "hostname": node}
    return json.dumps({"status": status, "result": result, "traceback": None, "children": [],
                       "date_done": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                       + f".{int(time.time() * 1e6) % 1_000_000:06d}+00:00" if done else None,
                       "task_id": task_id})


@dataclass
class ShardSamples:
    tasks: list[tuple[str, str, float, float | None]] = field(default_factory=list)
    lag: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    lost_leases: int = 0
    connected: int = 0


class SimVolunteer:
    def __init__(self, name: str, host: str, port: int, password: str, cfg: SimConfig,
                 samples: ShardSamples) -> None:
        self.name, self.cfg, self.samples = name, cfg, samples
        self.ns = namespace.prefix(name)
        self.node = f"{name}@sim"
        self.options = {"host": host, "port": port, "username": namespace.username(name),
                        "password": password, "decode_responses": True,
                        "lib_name": None, "lib_version": None,
                        # redis-py 8 times out every read after 5 s by default: a BRPOP
                        # answered just after that is lost (the server popped the message).
                        "socket_timeout": None}
        self.queue = self.ns + "cpu"
        self.brpop_keys = [self.queue, *(f"{self.queue}{PRIORITY_SEP}{s}" for s in (3, 6, 9))]
        self.held: dict[str, str] = {}  # delivery tag -> task id
        self.stored: set[str] = set()  # tags whose result is stored, not yet acked
        self.status_key = self.ns + keys.worker(self.node)
        self.beat = heartbeat(self.node, 1, 0)

    async def connect(self) -> None:
        self.blocking = aredis.Redis(single_connection_client=True, **self.options)
        pool = aredis.BlockingConnectionPool(max_connections=1, timeout=None, **self.options)
        self.cmd = aredis.Redis(connection_pool=pool)
        await self.blocking.ping()
        await self.cmd.ping()
        await self.report()

    def start(self) -> list[asyncio.Task[None]]:
        loops = [self.consume, self.reports, self.leases]
        if self.cfg.events:
            loops.append(self.beats)
        return [asyncio.create_task(self.guard(loop)) for loop in loops]

    async def guard(self, loop: Any) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.samples.errors += 1
                if len(self.samples.first_errors) < 3:
                    self.samples.first_errors.append(f"{self.name} {loop.__name__}: {exc!r}")
                await asyncio.sleep(1.0)

    async def report(self) -> None:
        await self.cmd.set(self.status_key, status_document(self.node, len(self.held)),
                           ex=round(3 * self.cfg.status_every))

    async def reports(self) -> None:
        await asyncio.sleep(random.uniform(0, self.cfg.status_every))
        while True:
            await self.report()
            await asyncio.sleep(self.cfg.status_every)

    async def leases(self) -> None:
        await asyncio.sleep(random.uniform(0, self.cfg.lease_every))
        while True:
            if self.held:
                pipe = self.cmd.pipeline(transaction=False)
                tags = list(self.held)
                for tag in tags:
                    pipe.zadd(self.ns + keys.UNACKED_INDEX, {tag: time.time()}, xx=True, ch=True)
                for tag, changed in zip(tags, await pipe.execute(), strict=True):
                    # Gone while held and before its result: taken back by the coordinator.
                    # (After the result, the coordinator may close it before our ack.)
                    if not changed and tag in self.held and tag not in self.stored:
                        self.samples.lost_leases += 1
            await asyncio.sleep(self.cfg.lease_every)

    async def beats(self) -> None:
        await asyncio.sleep(random.uniform(0, self.cfg.heartbeat_every))
        while True:
            await self.cmd.publish(self.ns + HEARTBEAT_CHANNEL, self.beat)
            await asyncio.sleep(self.cfg.heartbeat_every)

    async def consume(self) -> None:
        await asyncio.sleep(random.uniform(0, self.cfg.brpop_timeout))
        while True:
            reply = await self.blocking.brpop(self.brpop_keys, timeout=self.cfg.brpop_timeout)
            if reply is not None:
                await self.run_task(*reply)

    async def event(self, kind: str, task_id: str) -> None:
        await self.cmd.publish(self.ns + TASK_EVENTS, envelope(
            {"uuid": task_id, "type": kind, "hostname": self.node, "timestamp": time.time()},
            "celeryev", "task.multi"))

    async def store(self, task_id: str, status: str) -> None:
        key = f"{self.ns}celery-task-meta-{task_id}"
        meta = result_meta(task_id, self.node, status)
        pipe = self.cmd.pipeline(transaction=True)
        pipe.execute_command("SETEX", key, 86_400, meta)  # what Celery's backend sends
        pipe.publish(key, meta)
        await pipe.execute()

    async def run_task(self, queue: str, raw: str) -> None:
        popped = time.time()
        message = json.loads(raw)
        task_id, tag = message["headers"]["id"], message["properties"]["delivery_tag"]
        pipe = self.cmd.pipeline(transaction=True)
        pipe.zadd(self.ns + keys.UNACKED_INDEX, {tag: popped})
        pipe.hset(self.ns + keys.UNACKED, tag, json.dumps([message, "", "cpu"]))
        await pipe.execute()
        self.held[tag] = task_id
        record = [self.name, task_id, popped, None]
        self.samples.tasks.append(record)  # type: ignore[arg-type]
        if self.cfg.events:
            await self.event("task-received", task_id)
            await self.store(task_id, "STARTED")
            await self.event("task-started", task_id)
        await asyncio.sleep(random.expovariate(1.0 / self.cfg.mean_seconds))
        if self.cfg.events:
            await self.cmd.eval(credit._RECORD, 2, self.ns + keys.credited(task_id),
                                self.ns + keys.credit(self.node), "0.001000", "0.000000",
                                f"{time.time():.3f}", 86_400)
        self.stored.add(tag)
        await self.store(task_id, "SUCCESS")
        record[3] = time.time()
        pipe = self.cmd.pipeline(transaction=True)
        pipe.zrem(self.ns + keys.UNACKED_INDEX, tag)
        pipe.hdel(self.ns + keys.UNACKED, tag)
        await pipe.execute()
        self.held.pop(tag, None)
        self.stored.discard(tag)
        if self.cfg.events:
            await self.event("task-succeeded", task_id)


async def shard_main(host: str, port: int, password: str, names: list[str], cfg: SimConfig,
                     ready: Any, stop: Any, out: Any) -> None:
    samples = ShardSamples()
    volunteers = [SimVolunteer(n, host, port, password, cfg, samples) for n in names]
    gate = asyncio.Semaphore(32)  # connect in small bursts: the accept backlog is 511

    async def connect(volunteer: SimVolunteer) -> None:
        async with gate:
            await volunteer.connect()

    results = await asyncio.gather(*(connect(v) for v in volunteers), return_exceptions=True)
    connected = [v for v, r in zip(volunteers, results, strict=True) if r is None]
    samples.errors += len(volunteers) - len(connected)
    samples.connected = len(connected)
    running = [task for volunteer in connected for task in volunteer.start()]
    ready.release()
    while not stop.is_set():  # how late the loop wakes: is the simulator keeping up
        planned = time.monotonic() + 0.1
        await asyncio.sleep(0.1)
        samples.lag.append((time.time(), time.monotonic() - planned))
    for task in running:
        task.cancel()
    out.put({"tasks": [tuple(t) for t in samples.tasks], "lag": samples.lag,
             "errors": samples.errors, "first_errors": samples.first_errors,
             "lost_leases": samples.lost_leases,
             "connected": samples.connected})
    out.close()
    out.join_thread()
    os._exit(0)  # closing thousands of sockets one by one is not part of the benchmark


def run_shard(*args: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(shard_main(*args))
