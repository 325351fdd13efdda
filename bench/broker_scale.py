"""Broker-scale benchmark: N simulated volunteers against ONE private redis-server.

    python bench/broker_scale.py [--sizes 100,250,500,1000,2000] [--quick] [--json PATH]
    python bench/broker_scale.py --calibrate     # one real worker vs one simulated volunteer

What a simulated volunteer does, command for command what a real ``idle-accel
worker`` (Celery 5.7, kombu's Redis transport, this project's settings) sends:

- three connections: one for the blocking consume, one for other commands, one
  subscribed (PSUBSCRIBE) to the remote-control fanout ``/0.celery.pidbox``
  (``--extra-connections`` adds idle ones: a real prefork worker holds 9);
- while its owner is away: ``BRPOP`` over its queues with a 1 s timeout, the
  20 keys a 24 GiB machine's worker watches (``cpu``, ``cpu.ram2`` ... ``cpu.ram16``,
  each with kombu's priority twins); while the owner is present it issues none;
- the owner comes and goes (exponential dwell times, ``--dwell`` mean seconds
  between changes, ``--away`` share of time away); each change publishes the
  status at once, as the gate does;
- every 5 s: the status document (``SET idle-accel:worker:<node> ... EX 15``,
  the same fields as ``worker/owner_loop.py``) and a read of the fleet mode;
  kombu's restore sweep (lock ``unacked_mutex``, ``ZRANGE unacked_index BYSCORE
  REV``, hand back any task whose lease ran out, unlock); lease renewal
  (``ZADD unacked_index XX``) of each task it holds, as ``worker/lease.py``;
- every 2 s: the worker heartbeat event (``PUBLISH /0.celeryev/worker.heartbeat``);
- per task: BRPOP returns the message, ``MULTI ZADD unacked_index, HSET
  unacked EXEC``, task events, ``SETEX celery-task-meta-<id>`` STARTED and
  SUCCESS with their ``PUBLISH`` (``task_track_started``), the credit Lua script
  of ``worker/credit.py``, and the ack (``MULTI ZREM unacked_index, HDEL unacked EXEC``).

A producer LPUSHes copies of a real task message (one ``compute.diag.noop`` sent
with the project's app, read back with LRANGE) at a fixed rate, with a
``task.sent`` event; a share of the tasks are long (``--long-share``,
``--long-seconds``), so leases are renewed and the sweep has something to watch
(a task run twice would show as a redelivery). A remote-control broadcast is
published every few seconds to measure how long it takes to reach every volunteer.

Not simulated: task execution itself (noop, or a sleep), the prefork pool's
own connections (a real worker's pool processes store results over their own
connections: see ``--calibrate`` for how many a real worker holds), the
suspension and preemption of running tasks (local signals, no broker traffic
until a preempted task is requeued), result consumers on the team side
(``SUBSCRIBE``/``GET`` of results), Flower, TLS, and network latency (loopback).

Every round starts a fresh redis-server; figures come from a steady window after
all volunteers connected and a warm-up. The simulator runs ``--shards`` asyncio
processes on the same two cores as Redis: its own CPU is reported beside Redis's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute import keys
from worker import credit
from worker.local.redis_server import RedisServer, find_binary

#: kombu's priority separator and steps: ``cpu`` is watched as cpu, cpu\x06\x163, ...
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
QUEUES = ("cpu.ram2", "cpu.ram4", "cpu.ram8", "cpu.ram16", "cpu")
PIDBOX = "/0.celery.pidbox"
HEARTBEAT_CHANNEL = "/0.celeryev/worker.heartbeat"
TASK_EVENTS = "/0.celeryev/task.multi"
SENT_EVENTS = "/0.celeryev/task.sent"
UNACKED_MUTEX = "unacked_mutex"
STATUS_EVERY = 5.0  # IDLE_ACCEL_STATUS_INTERVAL
HEARTBEAT_EVERY = 2.0  # Celery's worker heartbeat
VISIBILITY = 15.0  # IDLE_ACCEL_VISIBILITY_TIMEOUT: leases renewed every third
SWEEP_EVERY = 5.0  # unacked_restore_interval x throttle
BRPOP_TIMEOUT = 1


@dataclass(frozen=True)
class Config:
    rate: float = 50.0  # tasks offered per second
    away: float = 0.7  # share of time an owner is away (its worker consumes)
    dwell: float = 60.0  # mean seconds between owner changes, per volunteer
    long_share: float = 0.02  # share of tasks that run long_seconds
    long_seconds: float = 12.0
    warmup: float = 5.0
    window: float = 30.0
    shards: int = 2
    broadcast_every: float = 3.0
    idle_window: float = 10.0
    extra_connections: int = 0  # idle connections per volunteer beyond the three it uses


# -- payloads shaped like the real ones ---------------------------------------------------------


def brpop_keys(queues: tuple[str, ...] = QUEUES) -> list[str]:
    """The keys kombu's BRPOP watches: each queue, then each queue's priority twins."""
    return [*queues, *(f"{q}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS for q in queues)]


def envelope(body: dict[str, Any], exchange: str, routing_key: str) -> str:
    """A kombu message as the Redis transport stores it (base64 JSON body)."""
    raw = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps({
        "body": raw, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"hostname": "sim", "type": "event"},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": exchange,
                                                             "routing_key": routing_key},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())}})


def heartbeat(node: str, clock: int, processed: int) -> str:
    event = {"hostname": node, "utcoffset": 0, "pid": os.getpid(), "clock": clock, "freq": 2.0,
             "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux", "active": 0,
             "processed": processed, "loadavg": [0.5, 0.4, 0.3], "timestamp": time.time(),
             "local_received": time.time(), "type": "worker-heartbeat"}
    return envelope(event, "celeryev", "worker.heartbeat")


def status_document(node: str, state: str, held: int) -> str:
    """The fields ``worker/owner_loop.py`` publishes, for a 2-core 24 GiB machine."""
    consuming = list(QUEUES) if state == "idle" else []
    return json.dumps({
        "node": node, "pid": os.getpid(), "host": "sim", "mode": "volunteer", "region": None,
        "queues": list(QUEUES), "sensor": "file:/run/idle-accel/owner",
        "hardware": {"cores": 2, "ram_bytes": 25_276_502_016, "gpus": [],
                     "system": "Linux x86_64", "gpu_note": "NVML not available"},
        "concurrency": 2, "at": round(time.time(), 3), "state": state, "reasons": [],
        "notes": [], "away_for": 0.0, "busy_for": 0.0, "consuming": consuming,
        "running": held if state == "idle" else 0, "suspended": 0 if state == "idle" else held,
        "stopped_processes": 0, "fleet_mode": "normal", "emergency_when_busy": False,
    }, separators=(",", ":"))


def result_document(task_id: str, node: str, status: str) -> str:
    result = {"hostname": node} if status == "SUCCESS" else {"pid": os.getpid(), "hostname": node}
    return json.dumps({"status": status, "result": result, "traceback": None, "children": [],
                       "date_done": None if status == "STARTED" else time.time(),
                       "task_id": task_id, "name": "compute.diag.noop", "args": [],
                       "kwargs": {}, "worker": node, "retries": 0, "queue": "cpu"})


def real_task_message(url: str) -> str:
    """One real ``compute.diag.noop`` message, sent with the project's app and read back."""
    from compute.app import create_app
    from compute.settings import Settings

    app = create_app(Settings.load(broker_url=url))
    app.send_task("compute.diag.noop")
    client = redis.Redis.from_url(url)
    raw = client.lrange("cpu", 0, 0)[0].decode()
    client.flushdb()
    app.pool.force_close_all()
    return raw


def fresh_message(template: dict[str, Any], sent_at: float, long: bool) -> tuple[str, str]:
    """A copy of the real message with new ids, its send time and length in the headers."""
    task_id, tag = str(uuid.uuid4()), str(uuid.uuid4())
    message = {**template, "headers": {**template["headers"], "id": task_id, "root_id": task_id,
                                       "sim_sent_at": sent_at, "sim_long": long},
               "properties": {**template["properties"], "correlation_id": task_id,
                              "delivery_tag": tag}}
    return task_id, json.dumps(message)


# -- one simulated volunteer --------------------------------------------------------------------


@dataclass
class Samples:
    """What a shard measured; times are wall-clock seconds (one machine, one clock)."""

    add: list[tuple[float, float]]  # (decision time, seconds to status written + BRPOP sent)
    cancel: list[tuple[float, float]]  # (decision time, seconds to status written)
    drain: list[tuple[float, float]]  # (decision time, seconds until the in-flight BRPOP ended)
    tasks: list[tuple[float, float]]  # (sent time, seconds from LPUSH to result written)
    broadcast: list[tuple[float, float]]  # (sent time, seconds to reach this volunteer)
    executed: list[str]  # task ids run (a redelivered task appears twice)
    lag: list[tuple[float, float]]  # (time, seconds the shard's event loop woke late)
    restored: int = 0
    errors: int = 0


class Volunteer:
    def __init__(self, node: str, url: str, cfg: Config, samples: Samples) -> None:
        self.node, self.url, self.cfg, self.samples = node, url, cfg, samples
        self.away = random.random() < cfg.away
        self.consuming = asyncio.Event()
        self.held: dict[str, float] = {}
        self.cancelled_at: float | None = None  # a cancel while a BRPOP was in flight
        self.in_brpop = False
        self.processed = 0
        self.keys = brpop_keys()

    async def connect(self) -> None:
        self.blocking = aredis.Redis.from_url(self.url, single_connection_client=True,
                                              decode_responses=True)
        # One connection for every other command, pipelines and the lock included.
        pool = aredis.BlockingConnectionPool.from_url(self.url, max_connections=1, timeout=None,
                                                      decode_responses=True)
        self.cmd = aredis.Redis(connection_pool=pool)
        self.beat = heartbeat(self.node, 1, 0)  # same size every time: build it once
        self.pidbox = aredis.Redis.from_url(self.url, decode_responses=True).pubsub()
        await self.blocking.ping()  # HELLO/AUTH now, not at the first BRPOP
        await self.cmd.ping()
        await self.pidbox.psubscribe(PIDBOX)
        self.idle_connections = []  # a real prefork worker holds more (see --calibrate)
        for _ in range(self.cfg.extra_connections):
            extra = aredis.Redis.from_url(self.url, single_connection_client=True)
            await extra.ping()
            self.idle_connections.append(extra)
        await self.publish_status()

    def tasks(self) -> list[asyncio.Task[None]]:
        loops = (self.consume, self.owner, self.reports, self.beats, self.sweeps, self.leases,
                 self.listen)
        return [asyncio.create_task(self.guard(loop)) for loop in loops]

    async def guard(self, loop: Any) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a refused connection at the limit: count it, go on
                self.samples.errors += 1
                await asyncio.sleep(1.0)

    async def publish_status(self) -> None:
        state = "idle" if self.away else "busy"
        await self.cmd.set(keys.worker(self.node), status_document(self.node, state,
                                                                   len(self.held)),
                           ex=round(3 * STATUS_EVERY))

    async def owner(self) -> None:
        if self.away:
            self.consuming.set()
        while True:
            mean = 2 * self.cfg.dwell * (self.cfg.away if self.away else 1 - self.cfg.away)
            await asyncio.sleep(random.expovariate(1 / mean))
            decided = time.time()
            self.away = not self.away
            if self.away:
                await self.publish_status()
                self.consuming.set()  # the consume loop sends BRPOP at its next turn
                await asyncio.sleep(0)
                self.samples.add.append((decided, time.time() - decided))
            else:
                self.consuming.clear()
                if self.in_brpop:  # else nothing is in flight: taking stopped at once
                    self.cancelled_at = decided
                await self.publish_status()
                self.samples.cancel.append((decided, time.time() - decided))

    async def consume(self) -> None:
        await asyncio.sleep(random.uniform(0, BRPOP_TIMEOUT))  # workers start at random times
        while True:
            await self.consuming.wait()
            self.in_brpop = True
            try:
                reply = await self.blocking.brpop(self.keys, timeout=BRPOP_TIMEOUT)
            finally:
                self.in_brpop = False
            if self.cancelled_at is not None:
                self.samples.drain.append((self.cancelled_at, time.time() - self.cancelled_at))
                self.cancelled_at = None
            if reply is None:
                continue
            queue, raw = reply
            if not self.consuming.is_set():  # kombu: "Requeuing undeliverable message"
                await self.cmd.rpush(queue, raw)
                continue
            await self.run_task(queue, raw)

    async def run_task(self, queue: str, raw: str) -> None:
        message = json.loads(raw)
        task_id, tag = message["headers"]["id"], message["properties"]["delivery_tag"]
        pipe = self.cmd.pipeline(transaction=True)
        pipe.zadd(keys.UNACKED_INDEX, {tag: time.time()})
        pipe.hset(keys.UNACKED, tag, json.dumps([message, queue, queue]))
        await pipe.execute()
        self.held[tag] = time.time()
        await self.cmd.publish(TASK_EVENTS, envelope({"uuid": task_id, "type": "task-received"},
                                                     "celeryev", "task.multi"))
        await self.store(task_id, "STARTED")
        if message["headers"].get("sim_long"):
            await asyncio.sleep(self.cfg.long_seconds)
        await self.store(task_id, "SUCCESS")
        if not message["headers"].get("sim_long"):
            sent = float(message["headers"]["sim_sent_at"])
            self.samples.tasks.append((sent, time.time() - sent))
        self.samples.executed.append(task_id)
        await self.cmd.eval(credit._RECORD, 2, keys.credited(task_id), keys.credit(self.node),
                            "0.001000", "0.000000", f"{time.time():.3f}", 86_400)
        pipe = self.cmd.pipeline(transaction=True)
        pipe.zrem(keys.UNACKED_INDEX, tag)
        pipe.hdel(keys.UNACKED, tag)
        await pipe.execute()
        self.held.pop(tag, None)
        self.processed += 1
        await self.cmd.publish(TASK_EVENTS, envelope({"uuid": task_id, "type": "task-succeeded"},
                                                     "celeryev", "task.multi"))

    async def store(self, task_id: str, status: str) -> None:
        key = f"celery-task-meta-{task_id}"
        document = result_document(task_id, self.node, status)
        pipe = self.cmd.pipeline(transaction=True)
        pipe.execute_command("SETEX", key, 86_400, document)  # what Celery sends
        pipe.publish(key, document)
        await pipe.execute()

    async def reports(self) -> None:
        await asyncio.sleep(random.uniform(0, STATUS_EVERY))
        while True:
            await self.publish_status()
            await self.cmd.get(keys.FLEET_MODE)  # a missed emergency broadcast is caught here
            await asyncio.sleep(STATUS_EVERY)

    async def beats(self) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_EVERY))
        while True:
            await self.cmd.publish(HEARTBEAT_CHANNEL, self.beat)
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def leases(self) -> None:
        await asyncio.sleep(random.uniform(0, VISIBILITY / 3))
        while True:
            if self.held:
                pipe = self.cmd.pipeline(transaction=False)
                for tag in list(self.held):
                    pipe.zadd(keys.UNACKED_INDEX, {tag: time.time()}, xx=True, ch=True)
                await pipe.execute()
            await asyncio.sleep(VISIBILITY / 3)

    async def sweeps(self) -> None:
        """kombu's ``restore_visible``: lock, look for expired leases, hand them back."""
        await asyncio.sleep(random.uniform(0, SWEEP_EVERY))
        while True:
            lock = self.cmd.lock(UNACKED_MUTEX, timeout=300)
            if await lock.acquire(blocking=False):
                try:
                    expired = await self.cmd.zrange(keys.UNACKED_INDEX, time.time() - VISIBILITY,
                                                    0, desc=True, byscore=True, offset=0, num=10,
                                                    withscores=True)
                    for tag, _score in expired:
                        await self.restore(tag)
                finally:
                    with contextlib.suppress(Exception):
                        await lock.release()
            await asyncio.sleep(SWEEP_EVERY)

    async def restore(self, tag: str) -> None:
        raw = await self.cmd.hget(keys.UNACKED, tag)
        pipe = self.cmd.pipeline(transaction=True)
        pipe.zrem(keys.UNACKED_INDEX, tag)
        pipe.hdel(keys.UNACKED, tag)
        if raw:
            message, _exchange, queue = json.loads(raw)
            pipe.lpush(queue, json.dumps(message))
            self.samples.restored += 1
        await pipe.execute()

    async def listen(self) -> None:
        async for message in self.pidbox.listen():
            if message.get("type") != "pmessage":
                continue
            sent = float(json.loads(message["data"])["headers"]["sim_sent_at"])
            self.samples.broadcast.append((sent, time.time() - sent))


# -- a shard: one process holding many volunteers -----------------------------------------------


async def shard_main(url: str, names: list[str], cfg: Config, ready: Any, stop: Any,
                     out: Any) -> None:
    samples = Samples([], [], [], [], [], [], [])
    volunteers = [Volunteer(name, url, cfg, samples) for name in names]
    gate = asyncio.Semaphore(32)  # connect in small bursts: the accept backlog is 511

    async def connect(volunteer: Volunteer) -> None:
        async with gate:
            await volunteer.connect()

    results = await asyncio.gather(*(connect(v) for v in volunteers), return_exceptions=True)
    connected = [v for v, r in zip(volunteers, results, strict=True) if r is None]
    samples.errors += len(volunteers) - len(connected)
    running = [task for volunteer in connected for task in volunteer.tasks()]
    ready.release()
    while not stop.is_set():  # also: how late the loop wakes, i.e. is the simulator keeping up
        planned = time.monotonic() + 0.1
        await asyncio.sleep(0.1)
        samples.lag.append((time.time(), time.monotonic() - planned))
    out.put(asdict(samples) | {"connected": len(connected), "tasks_running": len(running)})
    out.close()
    out.join_thread()
    os._exit(0)  # closing thousands of sockets one by one is not part of the benchmark


def run_shard(url: str, names: list[str], cfg: Config, ready: Any, stop: Any, out: Any) -> None:
    asyncio.run(shard_main(url, names, cfg, ready, stop, out))


# -- the producer, the broadcaster and the measurements (parent process) ------------------------


async def produce(url: str, template: dict[str, Any], cfg: Config, until: float) -> int:
    client = aredis.Redis.from_url(url, single_connection_client=True)
    sent, start = 0, time.monotonic()
    while time.monotonic() < until:
        long = random.random() < cfg.long_share
        task_id, raw = fresh_message(template, time.time(), long)
        await client.lpush("cpu", raw)
        await client.publish(SENT_EVENTS, envelope({"uuid": task_id, "type": "task-sent"},
                                                   "celeryev", "task.sent"))
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / cfg.rate - time.monotonic()))
    await client.aclose()
    return sent


async def broadcast(url: str, cfg: Config, until: float) -> list[float]:
    client = aredis.Redis.from_url(url, single_connection_client=True)
    times = []
    while time.monotonic() < until:
        await asyncio.sleep(cfg.broadcast_every)
        message = json.loads(envelope({"method": "ping", "arguments": {}, "destination": None},
                                      "celery.pidbox", ""))
        sent = time.time()
        message["headers"]["sim_sent_at"] = sent
        await client.publish(PIDBOX, json.dumps(message))
        times.append(sent)
    await client.aclose()
    return times


def snapshot(client: redis.Redis, pids: list[int]) -> dict[str, Any]:
    info = client.info()
    cpu = []
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        cpu.append(times.user + times.system)
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return {"t": time.monotonic(), "wall": time.time(), "cpu": cpu, "machine": busy,
            "commands": info["total_commands_processed"],
            "net": info["total_net_input_bytes"] + info["total_net_output_bytes"],
            "ops": info["instantaneous_ops_per_sec"], "clients": info["connected_clients"],
            "used_memory": info["used_memory"], "rss": info["used_memory_rss"]}


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def in_window(pairs: list[list[float]], start: float, end: float) -> list[float]:
    return [value for at, value in pairs if start <= at < end]


def measure(n: int, cfg: Config, template: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One round: a fresh redis-server, N volunteers, a steady window."""
    server = RedisServer(workdir / f"redis-{n}", extra_config=["maxclients 19900"])
    server.start()
    try:
        return _measure(server, n, cfg, template)
    finally:
        server.stop()


def _measure(server: RedisServer, n: int, cfg: Config, template: dict[str, Any]
             ) -> dict[str, Any]:
    client = server.client()
    empty = client.info("memory")["used_memory"]
    ctx = mp.get_context("fork")
    ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    names = [f"sim-{i:05d}@vol{i:05d}" for i in range(n)]
    shards = [ctx.Process(target=run_shard, args=(server.url(), names[i::cfg.shards], cfg,
                                                  ready, stop, out), daemon=True)
              for i in range(cfg.shards)]
    began = time.monotonic()
    for shard in shards:
        shard.start()
    for _ in shards:
        if not ready.acquire(timeout=600):
            raise RuntimeError("volunteers did not connect within 600 s")
    connect_s = time.monotonic() - began
    pids = [server._process.pid, *(shard.pid for shard in shards), os.getpid()]
    time.sleep(STATUS_EVERY + 1)  # every volunteer has published its status once
    quiet = [snapshot(client, pids)]  # owners come and go, no tasks yet
    time.sleep(cfg.idle_window)
    quiet.append(snapshot(client, pids))
    end = time.monotonic() + cfg.warmup + cfg.window

    async def drive() -> tuple[int, list[float], dict[str, Any], dict[str, Any]]:
        producer = asyncio.create_task(produce(server.url(), template, cfg, end))
        caster = asyncio.create_task(broadcast(server.url(), cfg, end))
        await asyncio.sleep(cfg.warmup)
        first = snapshot(client, pids)
        await asyncio.sleep(cfg.window)
        last = snapshot(client, pids)
        return await producer, await caster, first, last

    sent, casts, first, last = asyncio.run(drive())
    stop.set()
    parts = [out.get(timeout=120) for _ in shards]
    for shard in shards:
        shard.join(timeout=30)
    return summarize(n, cfg, parts, quiet, (first, last), casts, sent, empty, connect_s)


def rates(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """CPU % of one core per process (Redis first), commands/s and bytes/s between snapshots."""
    seconds = b["t"] - a["t"]
    return {"cpu": [100 * (y - x) / seconds for x, y in zip(a["cpu"], b["cpu"], strict=True)],
            "machine": 100 * (b["machine"] - a["machine"]) / seconds,
            "commands": (b["commands"] - a["commands"]) / seconds,
            "net": (b["net"] - a["net"]) / seconds}


def summarize(n: int, cfg: Config, parts: list[dict[str, Any]], quiet: list[dict[str, Any]],
              window: tuple[dict[str, Any], dict[str, Any]], casts: list[float], sent: int,
              empty: int, connect_s: float) -> dict[str, Any]:
    """One table row: the idle phase (no tasks) and the steady window (tasks at cfg.rate)."""
    first, last = window
    start, end = first["wall"], last["wall"]
    idle, busy = rates(*quiet), rates(first, last)
    merged = {key: [x for part in parts for x in part[key]]
              for key in ("add", "cancel", "drain", "tasks", "broadcast", "lag")}
    tasks = [v for at, v in merged["tasks"] if start <= at + v < end]
    reach = reach_times(merged["broadcast"], casts, n, start, end)
    executed = [x for part in parts for x in part["executed"]]
    row = {
        "volunteers": n,
        "connected": sum(part["connected"] for part in parts),
        "connect_s": round(connect_s, 1),
        "clients": last["clients"],
        "idle_redis_cpu_pct": round(idle["cpu"][0], 1),
        "idle_sim_cpu_pct": round(sum(idle["cpu"][1:]), 1),
        "idle_commands_per_s": round(idle["commands"]),
        "idle_net_bytes_per_volunteer_s": round(idle["net"] / n),
        "memory_per_volunteer_kib": round((quiet[1]["used_memory"] - empty) / n / 1024, 1),
        "redis_cpu_pct": round(busy["cpu"][0], 1),
        "sim_cpu_pct": round(sum(busy["cpu"][1:]), 1),
        "busiest_shard_cpu_pct": round(max(busy["cpu"][1:-1]), 1),
        # The machine is shared: what everything else used in the window (of 100 x cores).
        "others_cpu_pct": round(busy["machine"] - sum(busy["cpu"]), 1),
        "idle_others_cpu_pct": round(idle["machine"] - sum(idle["cpu"]), 1),
        "used_memory_mib": round(last["used_memory"] / 2**20, 1),
        "rss_mib": round(last["rss"] / 2**20, 1),
        "memory_per_task_bytes": round((last["used_memory"] - quiet[1]["used_memory"])
                                       / max(1, sent)),
        "commands_per_s": round(busy["commands"]),
        "instantaneous_ops": last["ops"],
        "net_bytes_per_s": round(busy["net"]),
        "offered_rate": cfg.rate,
        "tasks_sent": sent,
        "tasks_in_window": len(tasks),
        "redelivered": len(executed) - len(set(executed)),
        "restored": sum(part["restored"] for part in parts),
        "errors": sum(part["errors"] for part in parts),
        "toggles_in_window": len(in_window(merged["add"], start, end))
        + len(in_window(merged["cancel"], start, end)),
    }
    for name, values in (("add_ms", in_window(merged["add"], start, end)),
                         ("cancel_ms", in_window(merged["cancel"], start, end)),
                         ("drain_ms", in_window(merged["drain"], start, end)),
                         ("task_ms", tasks), ("broadcast_all_ms", reach),
                         ("sim_loop_lag_ms", in_window(merged["lag"], start, end))):
        row[name] = {"p50": ms(percentile(values, 0.5)), "p95": ms(percentile(values, 0.95)),
                     "max": ms(max(values) if values else math.nan)}
    return row


def reach_times(deliveries: list[list[float]], casts: list[float], n: int, start: float,
                end: float) -> list[float]:
    """Per broadcast in the window: seconds until the last volunteer got it (inf if one did not)."""
    by_cast: dict[float, list[float]] = {}
    for sent, delay in deliveries:
        by_cast.setdefault(sent, []).append(delay)
    return [max(by_cast.get(sent, [math.inf])) if len(by_cast.get(sent, [])) >= n else math.inf
            for sent in casts if start <= sent < end]


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 1)


# -- calibration: one real worker against one simulated volunteer -------------------------------


def idle_load(server: RedisServer, seconds: float) -> dict[str, float]:
    client = server.client()
    a = client.info()
    time.sleep(seconds)
    b = client.info()
    client.close()
    return {"commands_per_s": round((b["total_commands_processed"]
                                     - a["total_commands_processed"] - 1) / seconds, 2),
            "net_bytes_per_s": round((b["total_net_input_bytes"] + b["total_net_output_bytes"]
                                      - a["total_net_input_bytes"]
                                      - a["total_net_output_bytes"]) / seconds),
            "clients": b["connected_clients"] - 1}


def calibrate(workdir: Path, seconds: float) -> dict[str, Any]:
    """Idle load of one real ``idle-accel worker`` (owner away) and of one simulated volunteer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gated_worker import gated

    from compute.app import create_app
    from compute.settings import Settings

    found: dict[str, Any] = {}
    with RedisServer(workdir / "calibrate-real") as server:
        env = dict(os.environ, CELERY_BROKER_URL=server.url(), IDLE_ACCEL_LOG_LEVEL="WARNING")
        app = create_app(Settings.load(broker_url=server.url()))
        worker = gated("calibrate", workdir, env)
        worker.start()
        try:
            worker.wait_ready(app, 60)
            app.pool.force_close_all()
            time.sleep(2)
            found["real worker (prefork c=2)"] = idle_load(server, seconds)
        finally:
            worker.stop()
    cfg = Config(away=1.0, dwell=1e9, rate=0.0)
    with RedisServer(workdir / "calibrate-sim") as server:

        async def one() -> dict[str, float]:
            samples = Samples([], [], [], [], [], [], [])
            volunteer = Volunteer("sim-0@vol0", server.url(), cfg, samples)
            await volunteer.connect()
            tasks = volunteer.tasks()
            await asyncio.sleep(STATUS_EVERY + 1)
            load = await asyncio.to_thread(idle_load, server, seconds)
            for task in tasks:
                task.cancel()
            return load

        found["simulated volunteer"] = asyncio.run(one())
    return found


# -- output -------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]]) -> None:
    idle = ("volunteers", "clients", "idle: Redis CPU %", "sim CPU %", "cmd/s", "B/s/vol",
            "KiB/vol", "add p50/p95 ms", "cancel p50/p95 ms", "drain p50/p95 ms")
    busy = ("volunteers", "tasks/s", "Redis CPU %", "sim CPU %", "cmd/s", "used MiB", "RSS MiB",
            "others CPU %", "task p50/p95/max ms", "bcast-all p50/max ms", "sim lag p95/max ms",
            "redelivered", "errors")
    print(" | ".join(idle))
    for r in rows:
        print(" | ".join(str(x) for x in (
            r["volunteers"], r["clients"], r["idle_redis_cpu_pct"], r["idle_sim_cpu_pct"],
            r["idle_commands_per_s"], r["idle_net_bytes_per_volunteer_s"],
            r["memory_per_volunteer_kib"], pair(r["add_ms"]), pair(r["cancel_ms"]),
            pair(r["drain_ms"]))))
    print()
    print(" | ".join(busy))
    for r in rows:
        print(" | ".join(str(x) for x in (
            r["volunteers"], r["offered_rate"], r["redis_cpu_pct"], r["sim_cpu_pct"],
            r["commands_per_s"], r["used_memory_mib"], r["rss_mib"], r["others_cpu_pct"],
            f"{pair(r['task_ms'])}/{r['task_ms']['max']}",
            f"{r['broadcast_all_ms']['p50']}/{r['broadcast_all_ms']['max']}",
            f"{r['sim_loop_lag_ms']['p95']}/{r['sim_loop_lag_ms']['max']}",
            r["redelivered"], r["errors"])))


def pair(figure: dict[str, Any]) -> str:
    return f"{figure['p50']}/{figure['p95']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,250,500,1000,2000")
    parser.add_argument("--quick", action="store_true", help="short warm-up and window")
    parser.add_argument("--rate", type=float, default=Config.rate)
    parser.add_argument("--away", type=float, default=Config.away)
    parser.add_argument("--dwell", type=float, default=Config.dwell)
    parser.add_argument("--window", type=float, default=Config.window)
    parser.add_argument("--shards", type=int, default=Config.shards)
    parser.add_argument("--extra-connections", type=int, default=0,
                        help="idle connections per volunteer on top of its three")
    parser.add_argument("--calibrate", action="store_true",
                        help="compare one real worker's idle load with one simulated volunteer")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args(argv)
    cfg = Config(rate=args.rate, away=args.away, dwell=args.dwell, shards=args.shards,
                 extra_connections=args.extra_connections,
                 window=10.0 if args.quick else args.window, warmup=3.0 if args.quick else 5.0,
                 idle_window=5.0 if args.quick else Config.idle_window)
    report: dict[str, Any] = {"config": asdict(cfg), "redis": find_binary(),
                              "cores": psutil.cpu_count(),
                              "ram_gib": round(psutil.virtual_memory().total / 2**30)}
    with tempfile.TemporaryDirectory(prefix="broker-scale-") as tmp:
        workdir = Path(tmp)
        if args.calibrate:
            report["calibration"] = calibrate(workdir, 10.0 if args.quick else 30.0)
            for name, load in report["calibration"].items():
                print(f"{name}: {load}")
        else:
            with RedisServer(workdir / "template") as server:
                template = json.loads(real_task_message(server.url()))
            report["task_message_bytes"] = len(json.dumps(template))
            rows = []
            for n in (int(x) for x in args.sizes.split(",")):
                rows.append(measure(n, cfg, template, workdir))
                print(json.dumps(rows[-1]), flush=True)
            report["rows"] = rows
            print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
