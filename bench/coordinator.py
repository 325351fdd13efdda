"""Coordinator benchmark: the trusted coordinator side by side with the direct path, in one run.

    python bench/coordinator.py [--quick] [--sections 1,2,3,4] [--sizes 250,500,...]
                                [--profile DIR]

Every part starts its own ``redis-server`` and real processes through the
project's CLI (``idle-accel worker``, ``idle-accel coordinator``), as
``tests/integration/enrolled.py`` does:

1. **Throughput**: ``compute.diag.noop`` tasks with results, from one team client,
   through ``idle-accel coordinator`` to 2 enrolled volunteer workers (each its
   own Redis user in ``vol:NAME:*``, owner away) vs 2 ``idle-accel worker --mode
   dedicated`` on the team's URL consuming the team queues directly; prefork
   c=1 each (and c=2 each); the coordinator with ``--ahead`` 1, 2 and 4; and one
   regional hop: the 2 volunteers enrolled on a region's own Redis, served by
   ``idle-accel coordinator --region`` pulling from the team's Redis. The
   direct path runs before and after the coordinator runs (drift shows).
2. **Added latency**: one task at a time, send -> result, through each path.
3. **Recovery**: a ``compute.diag.sleep`` runs on volunteer A; A's whole process
   group is killed (SIGKILL) or frozen (SIGSTOP) while volunteer B is idle; time
   until B's worker logs the task ``received``, split into detection (the
   coordinator logs the reissue) and delivery; with the default sweep and with
   ``--sweep-interval 0.3``.
4. **Scale**: N simulated volunteers (``bench/_sim_volunteers.py``: real ACL users,
   status reports, BRPOP, leases, results) against one coordinator; tasks offered
   at ``--load`` of the fleet's capacity (N / mean duration), so that a
   coordinator that falls behind shows as a growing backlog, late assignments and
   fewer completions than offered; the parts of its sweep are then timed with its
   own functions on the live state. ``--events-sizes`` runs sizes again with the
   workers' events (heartbeats, task events) going through the relay;
   ``--burst-sizes`` sends 2 x N tasks at once after the window (how long one step
   keeps the loop from sweeping); with ``--profile DIR`` py-spy records the
   coordinator during each window and a breakdown of its time is printed.

Figures are for this machine (cores shared by Redis, the coordinator, the
workers or simulator, and this client); they are not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _sim_volunteers as sim
from broker_scale import fresh_message, real_task_message

from compute import keys
from compute.app import create_app
from compute.coordinator import registry
from compute.coordinator.envelope import priority_lists
from compute.coordinator.service import Config as CoordinatorConfig
from compute.settings import Settings
from worker.idle import hostfile
from worker.local.coordinator_process import CoordinatorProcess
from worker.local.process import ManagedProcess
from worker.local.redis_server import RedisServer, find_binary, version
from worker.local.worker_process import WorkerProcess

DEFAULT_COORDINATOR = ("--lease-timeout", "8", "--sweep-interval", "1")
#: Sections 1 and 2: an honest volunteer running noops publishes 5 pub/sub messages a task
#: (task-received/started/succeeded events, STARTED and SUCCESS metas) plus a heartbeat every
#: 2 s; with the former quota of 200 messages/s a volunteer at 40 noops/s was disabled
#: (measured: "212 pub/sub messages a second, over its quota of 200"). Given explicitly, so
#: that the figures do not depend on the default.
FAST_QUOTA = ("--max-messages-per-second", "2000")
#: The region of the regional path (section 1): its volunteers on a Redis of their own.
REGION = "bench-region"
LOG_TIME = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}):")


# -- everything started is stopped, whatever happens --------------------------------------------


class Processes:
    """Every process and server this run started, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> Any:
        self.items.append(item)
        return item

    def stop(self, item: Any) -> None:
        with contextlib.suppress(Exception):
            if isinstance(item, ManagedProcess):
                item.stop(timeout=15)
            elif isinstance(item, RedisServer):
                item.stop()
            elif isinstance(item, mp.process.BaseProcess):
                if item.is_alive():
                    item.kill()
                item.join(timeout=10)
            elif isinstance(item, subprocess.Popen):
                if item.poll() is None:
                    item.kill()
                item.wait(timeout=10)
        with contextlib.suppress(ValueError):
            self.items.remove(item)

    def stop_all(self) -> None:
        for item in reversed(list(self.items)):
            self.stop(item)


PROCS = Processes()


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- small helpers --------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout:.0f} s: {what}")
        time.sleep(every)


def log_time(line: str) -> float | None:
    """The wall-clock time of a worker's or the coordinator's log line (local time, ms)."""
    found = LOG_TIME.search(line)
    if not found:
        return None
    stamp = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    return stamp.timestamp() + int(found.group(2)) / 1000


def pct(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def cpu_of(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (and of its children, with ``children``); 0 when gone."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system
        if children:
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = child.cpu_times()
                    total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def owner_file(path: Path, state: str) -> None:
    hostfile.write(path, {"state": state, "at": time.time()})


def team_app(server: RedisServer) -> Any:
    return create_app(Settings.load(broker_url=server.url(0), result_backend=server.url(0)))


def coordinator(server: RedisServer, workdir: Path, label: str, args: tuple[str, ...] = (),
                regional: RedisServer | None = None) -> CoordinatorProcess:
    """The team's coordinator on ``server``; with ``regional``, region REGION's coordinator
    serving the volunteers of that Redis and pulling from ``server``."""
    env = {"CELERY_BROKER_URL": server.url(0), "CELERY_RESULT_BACKEND": server.url(0)}
    if regional is not None:
        env["IDLE_ACCEL_REGION_REDIS_URL"] = regional.url(0)
        args = ("--region", REGION, *args)
    process = PROCS.add(CoordinatorProcess(env=env, args=list(args),
                                           log_path=workdir / f"coordinator-{label}.log"))
    process.start()
    with (regional or server).client() as client:
        process.wait_active(client, timeout=60)
    return process


def volunteer_worker(server: RedisServer, workdir: Path, name: str, concurrency: int,
                     owner: str = "idle", loglevel: str = "WARNING",
                     region: str | None = None) -> WorkerProcess:
    with server.client() as client:
        url = registry.enroll(client, server.url(0), name, region=region).broker_url
    sensor = workdir / f"{name}.owner"
    owner_file(sensor, owner)
    process = WorkerProcess(f"{name}@h", env={"CELERY_BROKER_URL": url},
                            log_path=workdir / f"{name}.log",
                            args=["--sensor", f"file:{sensor}", "--sensor-max-age", "0",
                                  "--idle-after", "0", "--concurrency", str(concurrency),
                                  "--loglevel", loglevel])
    process.sensor = sensor  # type: ignore[attr-defined]
    return PROCS.add(process)


def direct_worker(server: RedisServer, workdir: Path, name: str, concurrency: int
                  ) -> WorkerProcess:
    process = WorkerProcess(f"{name}@h", env={"CELERY_BROKER_URL": server.url(0)},
                            log_path=workdir / f"{name}.log",
                            args=["--mode", "dedicated", "--concurrency", str(concurrency),
                                  "--loglevel", "WARNING"])
    return PROCS.add(process)


def team_report(client: Any, node: str) -> dict[str, Any] | None:
    raw = client.get(keys.worker(node))
    return json.loads(raw) if raw else None


def wait_listed_idle(server: RedisServer, nodes: list[str], timeout: float = 60.0) -> None:
    """Until the coordinator republished every node's report as idle and consuming."""
    with server.client() as client:
        def ready() -> bool:
            for node in nodes:
                report = team_report(client, node)
                if not report or report.get("state") != "idle" or not report.get("consuming"):
                    return False
            return True
        wait_for(ready, timeout, f"{nodes} listed idle by the coordinator", every=0.05)


def stop_all(processes: list[Any]) -> None:
    for process in processes:
        PROCS.stop(process)


# -- 1 and 2: throughput and latency -----------------------------------------------------------


@dataclass
class Flood:
    rate: float
    cpu_ms: dict[str, float]


def flood(app: Any, tasks: int, pids: dict[str, tuple[int, bool]]) -> Flood:
    """Tasks/s for ``tasks`` noops sent at once, from the first send to the last result."""
    before = {name: cpu_of(pid, children) for name, (pid, children) in pids.items()}
    machine = machine_busy()
    started = time.perf_counter()
    results = [app.signature("compute.diag.noop").apply_async() for _ in range(tasks)]
    for result in results:
        result.get(timeout=120)
    seconds = time.perf_counter() - started
    after = {name: cpu_of(pid, children) for name, (pid, children) in pids.items()}
    cpu = {name: 1000 * (after[name] - before[name]) / tasks for name in pids}
    cpu["others"] = 1000 * (machine_busy() - machine) / tasks - sum(cpu.values())
    return Flood(tasks / seconds, cpu)


def latencies(app: Any, count: int) -> list[float]:
    found = []
    for _ in range(count):
        started = time.perf_counter()
        app.signature("compute.diag.noop").apply_async().get(timeout=60)
        found.append(time.perf_counter() - started)
    return found


def direct_run(server: RedisServer, app: Any, workdir: Path, conc: int, run: int,
               tasks: int, latency_n: int, lat: list[tuple[str, list[float]]]) -> Flood:
    direct = [direct_worker(server, workdir, f"direct{i}-c{conc}-run{run}", conc)
              for i in range(2)]
    try:
        for process in direct:
            process.start()
        for process in direct:
            process.wait_ready(app, 60)
        flood(app, 50, {})  # warm the pools
        found = flood(app, tasks, {"redis": (server._process.pid, False),
                                   "client": (os.getpid(), False),
                                   "workers": (direct[0].pid, True),
                                   "workers2": (direct[1].pid, True)})
        if latency_n:
            lat.append(("direct (team queues)", latencies(app, latency_n)))
        return found
    finally:
        stop_all(direct)


def warn_disabled(coord: CoordinatorProcess) -> None:
    for line in coord.log_text().splitlines():
        if "disabled" in line and "ERROR" in line:
            print(f"  WARNING, {coord.log_path.name}: {line[:200]}")


def regional_run(server: RedisServer, app: Any, workdir: Path, conc: int, tasks: int,
                 ahead: int, latency_n: int, lat: list[tuple[str, list[float]]]
                 ) -> tuple[str, Flood]:
    """One regional hop: 2 volunteers enrolled on a region's own Redis, its coordinator
    (``--region``) pulling from the team's Redis; the team sends as always."""
    regional = PROCS.add(RedisServer(workdir / f"redis-region-c{conc}"))
    regional.start()
    vols = [volunteer_worker(regional, workdir, f"reg{i}-c{conc}", conc, region=REGION)
            for i in range(2)]
    try:
        for process in vols:
            process.start()
        coord = coordinator(server, workdir, f"region-c{conc}",
                            (*DEFAULT_COORDINATOR, *FAST_QUOTA, "--ahead", str(ahead)),
                            regional=regional)
        try:
            wait_listed_idle(server, [v.node for v in vols])  # republished on the team's
            flood(app, 50, {})
            found = flood(app, tasks, {
                "redis": (server._process.pid, False), "client": (os.getpid(), False),
                "workers": (vols[0].pid, True), "workers2": (vols[1].pid, True),
                "coordinator": (coord.pid, False), "regional redis": (regional._process.pid,
                                                                      False)})
            if latency_n:
                lat.append((f"regional coordinator --ahead {ahead}", latencies(app, latency_n)))
        finally:
            stop_all([coord])
            warn_disabled(coord)
    finally:
        stop_all(vols)
        PROCS.stop(regional)
        with server.client() as client:  # the next coordinator starts from nothing
            for key in client.scan_iter(match=f"{keys.PREFIX}region:*"):
                client.delete(key)
    return f"regional hop --ahead {ahead}", found


def coordinator_runs(server: RedisServer, app: Any, workdir: Path, conc: int, tasks: int,
                     aheads: list[int], latency_n: int,
                     lat: list[tuple[str, list[float]]]) -> list[tuple[str, Flood]]:
    """2 enrolled volunteers, a coordinator per --ahead value (and latency runs)."""
    found = []
    vols = [volunteer_worker(server, workdir, f"vol{i}-c{conc}", conc) for i in range(2)]
    try:
        for process in vols:
            process.start()
        for ahead in aheads:
            coord = coordinator(server, workdir, f"c{conc}-ahead{ahead}",
                                (*DEFAULT_COORDINATOR, *FAST_QUOTA, "--ahead", str(ahead)))
            try:
                wait_listed_idle(server, [v.node for v in vols])
                flood(app, 50, {})
                found.append((f"coordinator --ahead {ahead}", flood(app, tasks, {
                    "redis": (server._process.pid, False), "client": (os.getpid(), False),
                    "workers": (vols[0].pid, True), "workers2": (vols[1].pid, True),
                    "coordinator": (coord.pid, False)})))
                if ahead == aheads[0] and latency_n:
                    lat.append((f"coordinator --ahead {ahead}", latencies(app, latency_n)))
            finally:
                stop_all([coord])
                warn_disabled(coord)
        if latency_n:
            coord = coordinator(server, workdir, f"c{conc}-fast",
                                (*DEFAULT_COORDINATOR, *FAST_QUOTA, "--ahead", str(aheads[0]),
                                 "--interval", "0.01"))
            try:
                wait_listed_idle(server, [v.node for v in vols])
                flood(app, 20, {})
                lat.append((f"coordinator --ahead {aheads[0]} --interval 0.01",
                            latencies(app, latency_n)))
            finally:
                stop_all([coord])
    finally:
        stop_all(vols)
        with server.client() as client:  # the next coordinator starts from nothing
            client.delete(keys.VOLUNTEERS)
    return found


def throughput_and_latency(workdir: Path, tasks: int, concurrencies: list[int],
                           aheads: list[int], latency_n: int) -> None:
    rows: dict[int, list[tuple[str, Flood]]] = {}
    lat: list[tuple[str, list[float]]] = []
    server = PROCS.add(RedisServer(workdir / "redis-throughput"))
    server.start()
    app = team_app(server)
    try:
        for conc in concurrencies:
            rows[conc] = []
            for run in (1, 2):
                first = run == 1 and conc == concurrencies[0]
                rows[conc].append((f"direct (team queues), run {run}",
                                   direct_run(server, app, workdir, conc, run, tasks,
                                              latency_n if first else 0, lat)))
                if run == 1:  # the coordinator paths, between the two direct runs
                    rows[conc] += coordinator_runs(server, app, workdir, conc, tasks, aheads,
                                                   latency_n if conc == concurrencies[0]
                                                   else 0, lat)
                    rows[conc].append(regional_run(server, app, workdir, conc, tasks,
                                                   aheads[0], latency_n
                                                   if conc == concurrencies[0] else 0, lat))
    finally:
        with contextlib.suppress(Exception):
            app.close()
        PROCS.stop(server)

    print(f"1. throughput: {tasks} compute.diag.noop with results, sent at once by one team "
          f"client, 2 workers; coordinator flags {' '.join(DEFAULT_COORDINATOR)} "
          f"{' '.join(FAST_QUOTA)} --ahead A")
    print("  (pub/sub quota given explicitly: a volunteer publishes ~5 messages a task, so "
          "at the former default of 200/s one running > ~40 noops/s was disabled as a "
          "flooder)")
    for conc, found in rows.items():
        direct_rates = [f.rate for label, f in found if label.startswith("direct")]
        base = statistics.mean(direct_rates)
        print(f"  prefork c={conc} per worker ({2 * conc} pool processes); ratio vs the mean "
              f"of the two direct runs ({base:.0f}/s)")
        print(f"  {'path':<34}{'tasks/s':>9}{'ratio':>7}{'coord ms/task':>15}"
              f"{'redis ms/task':>15}{'workers ms/task':>17}{'client ms/task':>16}"
              f"{'others ms/task':>16}")
        for label, f in found:
            workers = f.cpu_ms.get("workers", 0) + f.cpu_ms.get("workers2", 0)
            redis_ms = f.cpu_ms["redis"] + f.cpu_ms.get("regional redis", 0)  # both Redis
            coord = fmt(f.cpu_ms["coordinator"], 2) if "coordinator" in f.cpu_ms else "-"
            print(f"  {label:<34}{f.rate:>9.0f}{f.rate / base:>7.2f}{coord:>15}"
                  f"{redis_ms:>15.2f}{workers:>17.2f}{f.cpu_ms['client']:>16.2f}"
                  f"{f.cpu_ms['others']:>16.2f}")
        print("  (ms/task: CPU milliseconds per task of each process, pool processes included "
              "for workers; others: the rest of the machine's CPU meanwhile, per task: other "
              "programs on this shared machine; goal: ratio >= 0.8)")
    if lat:
        print()
        print(f"2. latency: one compute.diag.noop at a time, send -> result, {latency_n} tasks, "
              f"2 workers c={concurrencies[0]}, ms")
        print(f"  {'path':<44}{'p50':>8}{'p95':>8}{'max':>8}{'mean':>8}{'added p50':>11}")
        base = pct(lat[0][1], 0.5)
        for label, values in lat:
            print(f"  {label:<44}{1000 * pct(values, 0.5):>8.1f}{1000 * pct(values, 0.95):>8.1f}"
                  f"{1000 * max(values):>8.1f}{1000 * statistics.mean(values):>8.1f}"
                  f"{1000 * (pct(values, 0.5) - base):>11.1f}")
        print(f"  (the coordinator looks at the team queues every --interval, default "
              f"{CoordinatorConfig.interval} s, unless a volunteer's result wakes it)")


# -- 3: recovery ----------------------------------------------------------------------------------


@dataclass
class Recovery:
    total: float
    detect: float | None
    why: str
    team_shows_b: bool | None = None  # the team's STARTED names B within 3 s (first trials)


def recovery(workdir: Path, settings: list[tuple[str, ...]], trials: int) -> None:
    found: dict[tuple[tuple[str, ...], str], list[Recovery]] = {}
    server = PROCS.add(RedisServer(workdir / "redis-recovery"))
    server.start()
    app = team_app(server)
    counter = 0
    try:
        for flags in settings:
            coord = coordinator(server, workdir, "recovery-" + "-".join(flags[1::2]), flags)
            for how in ("SIGKILL", "SIGSTOP"):
                for trial in range(trials):
                    counter += 1
                    found.setdefault((flags, how), []).append(
                        one_recovery(server, app, workdir, coord, counter, how, trial == 0))
            stop_all([coord])
    finally:
        with contextlib.suppress(Exception):
            app.close()
        PROCS.stop(server)
    print("3. recovery: compute.diag.sleep(60) running on volunteer A (c=1); A's process group "
          "killed (SIGKILL) or frozen (SIGSTOP); volunteer B idle; s from the signal to B's "
          "worker logging the task received")
    print(f"  {'coordinator flags':<44}{'signal':<9}{'each: total (detect+deliver)':<50}"
          f"{'min':>6}{'median':>8}{'max':>6}")
    for (flags, how), runs in found.items():
        each = ", ".join(f"{r.total:.2f} ({fmt(r.detect, 2)}+"
                         f"{fmt(r.total - r.detect, 2) if r.detect is not None else '-'})"
                         for r in runs)
        totals = [r.total for r in runs]
        print(f"  {' '.join(flags):<44}{how:<9}{each:<50}{min(totals):>6.1f}"
              f"{statistics.median(totals):>8.1f}{max(totals):>6.1f}")
    whys = Counter((how, r.why) for (_, how), runs in found.items() for r in runs)
    for (how, why), count in sorted(whys.items()):
        print(f"  {how}: coordinator's reason ({count}x): {why}")
    shown = [r.team_shows_b for runs in found.values() for r in runs
             if r.team_shows_b is not None]
    if shown:
        print(f"  the team's result (STARTED) named B within 3 s of B receiving it in "
              f"{sum(shown)} of {len(shown)} first trials (else it still names A until the "
              "result)")
    print("  (detect: the signal -> the coordinator logs the reissue; deliver: -> B received; "
          "goal <= 10 s)")


def one_recovery(server: RedisServer, app: Any, workdir: Path, coord: CoordinatorProcess,
                 k: int, how: str, watch_team: bool) -> Recovery:
    a = volunteer_worker(server, workdir, f"ra{k}", 1, "idle", loglevel="INFO")
    b = volunteer_worker(server, workdir, f"rb{k}", 1, "busy", loglevel="INFO")
    a.start()
    b.start()
    try:
        wait_listed_idle(server, [a.node])
        result = app.signature("compute.diag.sleep", (60,)).delay()
        wait_for(lambda: result.state == "STARTED" and (result.info or {}).get("hostname")
                 == a.node, 60, "the task STARTED on A")
        owner_file(b.sensor, "idle")  # type: ignore[attr-defined]
        wait_listed_idle(server, [b.node])
        time.sleep(0.1)
        marker = f"[{result.id}] received"
        signalled = time.time()
        os.killpg(a.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
        line = wait_for(lambda: next((ln for ln in b.log_text().splitlines() if marker in ln),
                                     None), 60, "B received the task", every=0.01)
        received = log_time(line) or time.time()
        reissue = next((ln for ln in coord.log_text().splitlines()
                        if f"[{result.id}] taken back from {a.name.split('@')[0]}" in ln), "")
        detect = log_time(reissue) if reissue else None
        why = reissue.split("reissued: ", 1)[1] if "reissued: " in reissue else "?"
        shows_b = None
        if watch_team:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: (app.AsyncResult(result.id).info or {}).get("hostname")
                         == b.node, 3, "the team's STARTED names B", every=0.1)
            shows_b = (app.AsyncResult(result.id).info or {}).get("hostname") == b.node
        return Recovery(received - signalled,
                        None if detect is None else detect - signalled, why, shows_b)
    finally:
        for process in (b, a):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            PROCS.stop(process)
        with server.client() as client:
            for name in (f"ra{k}", f"rb{k}"):
                registry.disable(client, name, "benchmark trial over")
            # The coordinator retires both at its next sweep: the task goes back to the
            # team queue, where nobody may take it; drop it there.
            wait_for(lambda: client.zcard(keys.ASSIGNMENTS) == 0, 30,
                     "the trial's assignment ended", every=0.05)
            client.delete(*priority_lists("cpu"))


# -- 4: scale with simulated volunteers -----------------------------------------------------------


@dataclass(frozen=True)
class ScaleConfig:
    mean: float = 30.0
    load: float = 0.9
    idle: float = 8.0
    warmup: float = 5.0
    window: float = 25.0
    fill_timeout: float = 45.0
    shards: int = 2
    burst: bool = False
    events: bool = False
    flags: tuple[str, ...] = DEFAULT_COORDINATOR


def commandstats(client: Any) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def snapshot(client: Any, pids: dict[str, int]) -> dict[str, Any]:
    return {"t": time.monotonic(), "cpu": {name: cpu_of(pid) for name, pid in pids.items()},
            "machine": machine_busy(), "calls": commandstats(client)}


def rates(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    seconds = b["t"] - a["t"]
    calls = {k: (b["calls"].get(k, 0) - a["calls"].get(k, 0)) / seconds for k in b["calls"]}
    return {"cpu": {k: 100 * (b["cpu"][k] - a["cpu"][k]) / seconds for k in a["cpu"]},
            "machine": 100 * (b["machine"] - a["machine"]) / seconds, "calls": calls,
            "seconds": seconds}


async def drive_scale(server: RedisServer, n: int, cfg: ScaleConfig, template: dict[str, Any],
                      pids: dict[str, int], profile: Callable[[], Any],
                      alive: Callable[[], bool]) -> dict[str, Any]:
    """Fill the fleet, offer tasks at a steady rate, watch assignments and team results."""
    url = server.url(0)
    client = aredis.Redis.from_url(url, socket_timeout=120)
    sync = server.client()
    sent: dict[str, float] = {}
    assigned: dict[str, tuple[str, float]] = {}
    results: dict[str, float] = {}
    rate = cfg.load * n / cfg.mean
    stop = asyncio.Event()
    deadline_s = CoordinatorConfig.deadline

    async def push(count: int) -> None:
        pipe = client.pipeline(transaction=False)
        now = time.time()
        for _ in range(count):
            task_id, raw = fresh_message(template, now, False)
            sent[task_id] = now
            pipe.lpush("cpu", raw)
        await pipe.execute()

    async def fill() -> float:
        """Until load x N tasks are open (the steady state's number): 100 at a time whenever
        the team queue is nearly empty, never faster than the coordinator places them."""
        began, target = time.monotonic(), round(cfg.load * n)
        while time.monotonic() - began < cfg.fill_timeout and alive():
            waiting = await client.llen("cpu")
            held = await client.zcard(keys.ASSIGNMENTS)
            if held + waiting < target and waiting <= 20:
                await push(min(100, target - held - waiting))
            elif held >= 0.98 * target and waiting == 0:
                return time.monotonic() - began
            await asyncio.sleep(0.02)
        return math.nan

    async def steady() -> None:
        start, count = time.monotonic(), 0
        while not stop.is_set():
            await asyncio.sleep(0.02)
            due = int((time.monotonic() - start) * rate) - count
            if due > 0:
                await push(due)
                count += due

    async def watch_assignments() -> None:
        # An assignment's score is its deadline: the start of the coordinator's step that
        # placed it + --deadline. A step places many, one Lua call each: the time this
        # poll first sees one (every 50 ms) is when it was placed, within the poll period.
        low = 0.0
        while not stop.is_set():
            found = await client.zrangebyscore(keys.ASSIGNMENTS, low, "+inf", withscores=True)
            seen = time.time()
            for member, score in found:
                volunteer, task_id = member.decode().split("/", 1)
                if task_id not in assigned:
                    assigned[task_id] = (volunteer, max(score - deadline_s, seen))
                low = max(low, score)
            await asyncio.sleep(0.05 if len(found) < 200 else 0.5)  # cheap during a burst

    async def watch_results() -> None:
        pubsub = aredis.Redis.from_url(url, socket_timeout=120).pubsub()
        await pubsub.psubscribe("celery-task-meta-*")
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message and b'"SUCCESS"' in message["data"]:
                results.setdefault(message["channel"].decode()[17:], time.time())
        await pubsub.aclose()

    watchers = [asyncio.create_task(f()) for f in (watch_results, watch_assignments)]
    fill_s = await fill()
    fill_placed = len(assigned)
    feeder = asyncio.create_task(steady())
    await asyncio.sleep(cfg.warmup if alive() else 0)
    first = await asyncio.to_thread(snapshot, sync, pids)
    backlog0 = await client.llen("cpu")
    window_start = time.time()
    profiler = await asyncio.to_thread(profile) if alive() else None
    await asyncio.sleep(cfg.window if alive() else 5)
    last = await asyncio.to_thread(snapshot, sync, pids)
    window_end = time.time()
    backlog1 = await client.llen("cpu")
    open_assignments = await client.zcard(keys.ASSIGNMENTS)
    survived_window = alive()
    sweep = await asyncio.to_thread(time_sweep, server)
    stop.set()
    await asyncio.gather(feeder, *watchers)
    burst = await burst_test(client, sync, n, template, alive) if cfg.burst else None
    await client.aclose()
    sync.close()
    return {"sent": sent, "assigned": assigned, "results": results,
            "window": (window_start, window_end), "first": first, "last": last,
            "backlog": (backlog0, backlog1), "rate": rate, "open": open_assignments,
            "fill_s": fill_s, "fill_placed": fill_placed, "alive": survived_window,
            "burst": burst, "profiler": profiler, "sweep": sweep}


async def burst_test(client: Any, sync: Any, n: int, template: dict[str, Any],
                     alive: Callable[[], bool], seconds: float = 45.0) -> dict[str, Any]:
    """2 x N tasks sent at once to a busy fleet: how long the coordinator goes without a sweep
    (one step places all it can), until the team queue stops shrinking or ``seconds``."""
    size = 2 * n
    before = await client.zcard(keys.ASSIGNMENTS)
    pipe = client.pipeline(transaction=False)
    for _ in range(size):
        pipe.lpush("cpu", fresh_message(template, time.time(), False)[1])
    await pipe.execute()
    began = last_sweep = time.monotonic()
    sweeps = commandstats(sync).get("client|list", 0)
    longest, died_after = 0.0, None
    waiting, still = size, 0
    while time.monotonic() - began < seconds and still < 25:  # 5 s with no change: done
        await asyncio.sleep(0.2)
        if not alive():
            died_after = time.monotonic() - began
            break
        now_sweeps = commandstats(sync).get("client|list", 0)
        if now_sweeps != sweeps:
            sweeps, last_sweep = now_sweeps, time.monotonic()
        longest = max(longest, time.monotonic() - last_sweep)
        now_waiting = await client.llen("cpu")
        still = still + 1 if now_waiting == waiting else 0
        waiting = now_waiting
    placed = await client.zcard(keys.ASSIGNMENTS) - before
    return {"size": size, "placed": placed, "longest_without_sweep": longest,
            "died_after": died_after, "watched": time.monotonic() - began}


def time_sweep(server: RedisServer) -> dict[str, float]:
    """The sweep's parts timed here, with the coordinator's own code, on the live state.

    Read-only except for what the sweep writes anyway (the team's copies of the
    reports, the fleet mode in every namespace). The per-assignment judging
    (``_judge``) is not included: only the one transaction that reads every
    assignment's result, lease and queue position.
    """
    from types import SimpleNamespace

    import redis

    from compute.coordinator import volunteers
    from compute.coordinator.ledger import Ledger
    from compute.coordinator.relay import Relay

    client = redis.Redis(host="127.0.0.1", port=server.port, password=server.password,
                         socket_timeout=120)
    found: dict[str, float] = {}
    ledger = Ledger(client, "benchmark-readonly")
    cache = {a.member: a for a in ledger.load(ledger.all_members())}
    found["assignments"] = len(cache)

    def timed(name: str, call: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        value = call()
        found[name] = time.perf_counter() - began
        return value

    roster = volunteers.Roster()
    timed("refresh", lambda: roster.refresh(client))
    timed("client_list", lambda: volunteers.count_connections(client))
    timed("read_reports", lambda: volunteers.read_reports(
        client, {v.name for v in roster.active()}, time.time(), 20.0))
    fake = SimpleNamespace(cache=cache, roster=roster,
                           config=SimpleNamespace(sweep_interval=1.0))
    relay = Relay(fake, client)
    timed("fleet_mode", relay.fleet_mode)
    timed("publish_reports", lambda: relay.publish_reports(roster.active()))

    def check() -> None:
        pipe = client.pipeline(transaction=True)
        for a in cache.values():
            pipe.getrange(a.result_key(), 0, 2 * 256 * 1024 + 8192)
            pipe.zscore(a.ns + keys.UNACKED_INDEX, a.tag)
            pipe.lpos(a.ns + a.queue, a.vmessage)
        pipe.execute()
    timed("check", check)
    found["total"] = sum(found[k] for k in ("refresh", "fleet_mode", "publish_reports", "check"))
    client.close()
    return found


def scale_round(workdir: Path, n: int, cfg: ScaleConfig, template: dict[str, Any],
                profile_dir: Path | None) -> dict[str, Any]:
    server = PROCS.add(RedisServer(workdir / f"redis-sim-{n}",
                                   extra_config=["maxclients 19900"]))
    server.start()
    shards: list[Any] = []
    coord = None
    try:
        admin = server.client()
        names = [f"s{i:05d}" for i in range(n)]
        password = secrets.token_urlsafe(18)
        began = time.monotonic()
        sim.enroll_many(admin, names, password)
        enroll_s = time.monotonic() - began
        coord = coordinator(server, workdir, f"sim-{n}{'-events' if cfg.events else ''}",
                            cfg.flags)
        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        simcfg = sim.SimConfig(mean_seconds=cfg.mean, events=cfg.events)
        began = time.monotonic()
        for i in range(cfg.shards):
            shard = ctx.Process(target=sim.run_shard, daemon=True,
                                args=("127.0.0.1", server.port, password, names[i::cfg.shards],
                                      simcfg, ready, stop, out))
            shards.append(PROCS.add(shard))
            shard.start()
        for _ in shards:
            if not ready.acquire(timeout=600):
                raise RuntimeError("simulated volunteers did not connect within 600 s")
        connect_s = time.monotonic() - began

        def listed() -> bool:
            found = sum(1 for _ in admin.scan_iter(match=keys.worker("*@sim"), count=2000))
            return found >= n
        wait_for(listed, 60, f"the coordinator lists all {n} volunteers", every=0.5)
        pids = {"coordinator": coord.pid, "redis": server._process.pid, "bench": os.getpid(),
                **{f"shard{i}": s.pid for i, s in enumerate(shards)}}
        quiet = [snapshot(admin, pids)]
        time.sleep(cfg.idle)
        quiet.append(snapshot(admin, pids))
        log_mark = len(coord.log_text())

        def start_profile() -> Any:
            if profile_dir is None:
                return None
            profile_dir.mkdir(parents=True, exist_ok=True)
            path = profile_dir / f"coordinator-{n}{'-events' if cfg.events else ''}.txt"
            path.unlink(missing_ok=True)
            py_spy = Path(sys.executable).with_name("py-spy")
            return (PROCS.add(subprocess.Popen(
                [str(py_spy), "record", "--pid", str(coord.pid), "--duration",
                 str(int(cfg.window)), "--rate", "50", "--format", "raw", "--idle",
                 "--threads", "--nonblocking", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)), path)

        driven = asyncio.run(drive_scale(server, n, cfg, template, pids, start_profile,
                                         lambda: coord.alive))
        stop.set()
        parts = [out.get(timeout=120) for _ in shards]
        for shard in shards:
            shard.join(timeout=30)
            PROCS.stop(shard)
        log = coord.log_text()[log_mark:]
        if driven["profiler"] is not None:
            process, path = driven["profiler"]
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            PROCS.stop(process)
            driven["profile_path"] = path
        row = summarize_scale(n, cfg, driven, parts, quiet, enroll_s, connect_s, log)
        row["sweep"] = driven["sweep"]
        return row
    finally:
        for shard in shards:
            PROCS.stop(shard)
        if coord is not None:
            PROCS.stop(coord)
        PROCS.stop(server)


def summarize_scale(n: int, cfg: ScaleConfig, d: dict[str, Any], parts: list[dict[str, Any]],
                    quiet: list[dict[str, Any]], enroll_s: float, connect_s: float,
                    log: str) -> dict[str, Any]:
    start, end = d["window"]
    idle, busy = rates(*quiet), rates(d["first"], d["last"])
    tasks = [t for part in parts for t in part["tasks"]]
    popped = {task_id: at for _, task_id, at, _ in tasks}
    done = {task_id: at for _, task_id, _, at in tasks if at is not None}
    sent, assigned, results = d["sent"], d["assigned"], d["results"]
    in_window = [t for t, at in sent.items() if start <= at < end]
    # Placed and finished between two polls: popped (or its result) is when it was placed
    # at the latest; not placed at the end: counted as waiting until then (a lower bound).
    to_assign = [(assigned[t][1] if t in assigned else popped.get(t, results.get(t, end)))
                 - sent[t] for t in in_window]
    to_start = [popped[t] - sent[t] for t in in_window if t in popped]
    accept = [results[t] - done[t] for t in done if t in results and start <= done[t] < end]
    completed = sum(1 for at in results.values() if start <= at < end)
    busy_s = 0.0
    for _, _, a, b in tasks:
        lo, hi = max(a, start), min(b if b is not None else end, end)
        busy_s += max(0.0, hi - lo)
    lag = [v for part in parts for at, v in part["lag"] if start <= at < end]
    seconds = end - start
    offered = d["rate"]
    keeps_up = (d["alive"] and completed / seconds >= 0.85 * offered
                and d["backlog"][1] <= max(20, 2 * offered)
                and pct(to_assign, 0.95) < 2.5)
    trouble = [line for line in log.splitlines()
               if "lock was lost" in line or "Error" in line[:40] or "not judged" in line
               or "step failed" in line]
    return {
        "n": n, "enroll_s": enroll_s, "connect_s": connect_s,
        "connected": sum(p["connected"] for p in parts),
        "idle_coord_cpu": idle["cpu"]["coordinator"], "idle_redis_cpu": idle["cpu"]["redis"],
        "idle_sweeps": idle["calls"].get("client|list", 0.0),
        "fill_s": d["fill_s"], "fill_placed": d["fill_placed"],
        "coord_cpu": busy["cpu"]["coordinator"], "redis_cpu": busy["cpu"]["redis"],
        "sim_cpu": sum(v for k, v in busy["cpu"].items() if k.startswith("shard")),
        "bench_cpu": busy["cpu"]["bench"],
        "others_cpu": busy["machine"] - sum(busy["cpu"].values()),
        "sweeps": busy["calls"].get("client|list", 0.0),
        "offered": offered, "completed": completed / seconds,
        "utilization": busy_s / (n * seconds), "backlog": d["backlog"], "open": d["open"],
        "assign_p50": pct(to_assign, 0.5), "assign_p95": pct(to_assign, 0.95),
        "assign_max": max(to_assign, default=math.nan),
        "start_p50": pct(to_start, 0.5), "start_p95": pct(to_start, 0.95),
        "accept_p50": pct(accept, 0.5), "accept_p95": pct(accept, 0.95),
        "accept_max": max(accept, default=math.nan),
        "lag_p95": pct(lag, 0.95),
        "reissued": log.count("reissued"),
        "errors": sum(p["errors"] for p in parts),
        "first_errors": [e for p in parts for e in p["first_errors"]][:3],
        "lost_leases": sum(p["lost_leases"] for p in parts),
        "keeps_up": keeps_up, "alive": d["alive"], "events": cfg.events,
        "burst": d["burst"], "trouble": trouble, "profile": d.get("profile_path"),
    }


def scale(workdir: Path, sizes: list[int], cfg: ScaleConfig, profile_dir: Path | None,
          events_sizes: list[int], burst_sizes: list[int]) -> None:
    with RedisServer(workdir / "redis-template") as server:
        template = json.loads(real_task_message(server.url()))
    rows = []
    plan = [(n, ScaleConfig(**{**cfg.__dict__, "burst": n in burst_sizes})) for n in sizes]
    plan += [(n, ScaleConfig(**{**cfg.__dict__, "events": True})) for n in events_sizes]
    for n, round_cfg in plan:
        row = scale_round(workdir, n, round_cfg, template, profile_dir)
        rows.append(row)
        print(f"  ... {n} volunteers{' (events)' if round_cfg.events else ''}: "
              f"{row['completed']:.1f}/s of {row['offered']:.1f}/s offered, coordinator "
              f"{row['coord_cpu']:.0f}% CPU, assign p95 {row['assign_p95']:.2f} s", flush=True)
    print()
    print(f"4. scale: N simulated volunteers (bench/_sim_volunteers.py) against one coordinator "
          f"({' '.join(cfg.flags)}, --ahead 1)")
    print(f"  each volunteer: its own ACL user (the registry's rules; enrolled in pipelines) "
          f"and 2 connections; status report every 5 s; BRPOP timeout "
          f"{sim.SimConfig.brpop_timeout} s; lease renewed every 2 s; "
          f"concurrency 1; tasks last Exp(mean {cfg.mean:.0f} s); {cfg.shards} simulator "
          f"processes. Per N: idle phase {cfg.idle:.0f} s; fill: until {cfg.load:.0%} x N tasks "
          f"are open, 100 at a time whenever the team queue is nearly empty; then tasks offered at "
          f"{cfg.load:.0%} of N/{cfg.mean:.0f} s: warm-up {cfg.warmup:.0f} s, window "
          f"{cfg.window:.0f} s")
    print("  events=yes: volunteers also publish heartbeats (2 s), task events, STARTED metas "
          "and credit claims, as real workers do (the coordinator's relay handles them)")
    print(f"  {'N':>6}{'events':>7}{'enroll s':>9}{'connect s':>10}{'idle: coord%':>13}"
          f"{'redis%':>7}{'sweeps/s':>9}{'fill s':>8}{'placed/s':>9}")
    for r in rows:
        print(f"  {r['n']:>6}{'yes' if r['events'] else 'no':>7}{r['enroll_s']:>9.1f}"
              f"{r['connect_s']:>10.1f}{r['idle_coord_cpu']:>13.0f}{r['idle_redis_cpu']:>7.0f}"
              f"{r['idle_sweeps']:>9.2f}{fmt(r['fill_s']):>8}"
              f"{fmt(r['fill_placed'] / r['fill_s'] if r['fill_s'] else math.nan, 0):>9}")
    print()
    print(f"  {'N':>6}{'events':>7}{'offered/s':>10}{'done/s':>8}{'util':>6}{'backlog':>11}"
          f"{'coord%':>7}{'redis%':>7}{'sim%':>6}{'bench%':>7}{'others%':>8}{'sweeps/s':>9}"
          f"{'assign p50/p95/max s':>22}{'start p50/p95 s':>16}{'accept p50/p95/max s':>22}"
          f"{'sim lag p95':>12}{'reissued':>9}{'keeps up':>9}")
    for r in rows:
        assign = "/".join(fmt(r[k], 2) for k in ("assign_p50", "assign_p95", "assign_max"))
        start = "/".join(fmt(r[k], 2) for k in ("start_p50", "start_p95"))
        accept = "/".join(fmt(r[k], 3) for k in ("accept_p50", "accept_p95")) + "/" + \
            fmt(r["accept_max"], 2)
        verdict = "yes" if r["keeps_up"] else ("DIED" if not r["alive"] else "NO")
        print(f"  {r['n']:>6}{'yes' if r['events'] else 'no':>7}{r['offered']:>10.1f}"
              f"{r['completed']:>8.1f}{r['utilization']:>6.2f}"
              f"{str(r['backlog'][0]) + '->' + str(r['backlog'][1]):>11}"
              f"{r['coord_cpu']:>7.0f}{r['redis_cpu']:>7.0f}{r['sim_cpu']:>6.0f}"
              f"{r['bench_cpu']:>7.0f}{r['others_cpu']:>8.0f}{r['sweeps']:>9.2f}"
              f"{assign:>22}{start:>16}{accept:>22}{fmt(r['lag_p95'], 3):>12}"
              f"{r['reissued']:>9}{verdict:>9}")
    print("  idle: no tasks, every volunteer idle; fill s: until load x N tasks are open "
          "(placed/s: the coordinator's placement rate then); offered/done: tasks/s "
          "offered and team results stored in the window; util: share of volunteer-time "
          f"holding a task (offered: {cfg.load:.2f}); backlog: team queue length at window "
          "start->end; CPU % of one core (bench%: this script's feeder and watchers; "
          f"others%: the rest of the machine, of {100 * (os.cpu_count() or 1)}, i.e. other "
          "programs on it); sweeps/s: the coordinator's CLIENT LIST calls (one per sweep); "
          "assign: sent -> seen placed in a volunteer's queue (50 ms polls); start: sent -> "
          "popped by a volunteer; accept: volunteer stored its result -> team result stored; "
          "sim lag: how late the simulator's loop woke (s); keeps up: the team queue stays "
          "under 2 s of arrivals, assign p95 < 2.5 s and done >= 85% of offered (done/s is "
          f"noisy: Exp durations, a {cfg.window:.0f} s window)")
    print()
    print("  the sweep's parts, timed in this script with the coordinator's own functions on the "
          "live state right after the window (s; its judging of each assignment not included)")
    print(f"  {'N':>6}{'events':>7}{'assignments':>12}{'roster refresh':>15}{'(CLIENT LIST':>13}"
          f"{'reports)':>9}{'fleet_mode':>11}{'publish_reports':>16}{'check':>7}{'total':>7}")
    for r in rows:
        w = r["sweep"]
        print(f"  {r['n']:>6}{'yes' if r['events'] else 'no':>7}{w['assignments']:>12.0f}"
              f"{w['refresh']:>15.3f}{w['client_list']:>13.3f}{w['read_reports']:>9.3f}"
              f"{w['fleet_mode']:>11.3f}{w['publish_reports']:>16.3f}{w['check']:>7.3f}"
              f"{w['total']:>7.3f}")
    flags = list(cfg.flags)
    every = flags[flags.index("--sweep-interval") + 1] if "--sweep-interval" in flags else "1"
    print(f"  (the coordinator sweeps every {every} s; nothing else happens in its loop while "
          "it sweeps)")
    print()
    for r in rows:
        if r["errors"] or r["lost_leases"] or r["connected"] != r["n"]:
            print(f"  N={r['n']}: simulator errors {r['errors']} {r['first_errors']}, leases "
                  f"taken back while running {r['lost_leases']}, connected "
                  f"{r['connected']}/{r['n']}")
        for line in r["trouble"][:3]:
            print(f"  N={r['n']}: coordinator log: {line[:160]}")
        if r["burst"]:
            b = r["burst"]
            print(f"  N={r['n']}: burst of {b['size']} tasks sent at once after the window: "
                  f"{b['placed']} placed in {b['watched']:.0f} s watched; longest time without "
                  f"a sweep {b['longest_without_sweep']:.1f} s; "
                  + (f"the coordinator EXITED after {b['died_after']:.1f} s"
                     if b["died_after"] is not None else "the coordinator stayed up"))
    for r in rows:
        if r["profile"] and Path(r["profile"]).exists():
            print()
            print(f"  py-spy, coordinator at N={r['n']}{' (events)' if r['events'] else ''} "
                  f"({r['profile']}):")
            for line in profile_summary(Path(r["profile"])):
                print("    " + line)


# -- py-spy breakdown -----------------------------------------------------------------------------


PROJECT_FILES = ("service.py", "ledger.py", "completion.py", "volunteers.py", "relay.py",
                 "quota.py", "registry.py", "lock.py", "reports.py", "envelope.py")
WAITING_LEAVES = ("_read_from_socket", "readline", "recv", "wait", "select", "poll",
                  "_wait_for_tstate_lock", "get_message")


def _fname(frame: str) -> str:
    return frame.split(" (", 1)[0].rsplit(".", 1)[-1]


def _path(frames: list[str], depth: int) -> str:
    """The chain of the coordinator's own functions in a stack (``wait`` for idle waits)."""
    chain = []
    for frame in frames:
        name = _fname(frame)
        if any(f"({f}:" in frame or f"/{f}:" in frame for f in PROJECT_FILES):
            if name not in ("run", "step", "_listen", "__call__"):
                chain.append(name)
        elif (name == "wait" and "(threading.py" in frame) or name == "get_message":
            chain.append(name)
            break
    return ">".join(chain[:depth]) or "(other)"


def profile_summary(path: Path, top: int = 12, depth: int = 4) -> list[str]:
    """Where the coordinator's threads spend their wall time (py-spy raw, --idle --threads)."""
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            stacks[stack] += int(count)
    threads: dict[str, Counter[str]] = {}
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        if not any("service.py" in f or "relay.py" in f for f in frames):
            continue
        threads.setdefault(thread, Counter())[_path(frames[1:], depth)] += count
        if not any(_fname(frames[-1]).startswith(w) for w in WAITING_LEAVES):
            leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
    lines = []
    for thread, found in threads.items():
        total = sum(found.values())
        lines.append(f"thread {thread}: {total} samples (wall time, Redis round trips "
                     "included), by the coordinator's own call chain:")
        for label, count in found.most_common(top):
            lines.append(f"  {100 * count / total:5.1f}%  {label}")
    busy = sum(leaves.values())
    lines.append(f"on-CPU leaf functions (not waiting on a socket or event; {busy} samples):")
    for name, count in leaves.most_common(8):
        lines.append(f"  {100 * count / max(1, busy):5.1f}%  {name}")
    return lines


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks, trials and sizes")
    parser.add_argument("--sections", default="1,2,3,4")
    parser.add_argument("--tasks", type=int, help="noop tasks per throughput run")
    parser.add_argument("--latency-n", type=int, help="tasks per latency run")
    parser.add_argument("--trials", type=int, help="recovery trials per signal and setting")
    parser.add_argument("--sizes", help="simulated fleet sizes, comma-separated")
    parser.add_argument("--events-sizes", help="sizes run again with worker events on")
    parser.add_argument("--burst-sizes", help="sizes where 2 x N tasks are sent at once "
                        "after the window (how long one step blocks the loop); default none")
    parser.add_argument("--window", type=float, help="scale: seconds measured per size")
    parser.add_argument("--mean", type=float, default=ScaleConfig.mean,
                        help="scale: mean task seconds")
    parser.add_argument("--load", type=float, default=ScaleConfig.load,
                        help="scale: offered share of the fleet's capacity")
    parser.add_argument("--shards", type=int, default=ScaleConfig.shards)
    parser.add_argument("--coordinator-flags", default=" ".join(DEFAULT_COORDINATOR),
                        help="scale: the coordinator's flags")
    parser.add_argument("--profile", type=Path, help="scale: py-spy the coordinator, save here")
    args = parser.parse_args(argv)
    quick = args.quick
    sections = {int(s) for s in args.sections.split(",") if s}
    tasks = args.tasks or (300 if quick else 2000)
    latency_n = args.latency_n if args.latency_n is not None else (50 if quick else 200)
    trials = args.trials or (1 if quick else 3)
    sizes = [int(x) for x in (args.sizes or ("250,1000" if quick else
                                             "250,500,1000,2000,4000")).split(",") if x]
    events_sizes = [int(x) for x in (args.events_sizes if args.events_sizes is not None else
                                     ("" if quick else "1000")).split(",") if x]
    burst_sizes = [int(x) for x in (args.burst_sizes or "").split(",") if x]
    cfg = ScaleConfig(mean=args.mean, load=args.load, shards=args.shards,
                      idle=4.0 if quick else ScaleConfig.idle,
                      warmup=3.0 if quick else ScaleConfig.warmup,
                      window=args.window or (10.0 if quick else ScaleConfig.window),
                      flags=tuple(args.coordinator_flags.split()))

    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    binary = find_binary()
    print(f"coordinator benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
          f"{' (--quick)' if quick else ''}")
    print(f"machine: {os.cpu_count()} CPUs ({psutil.cpu_count(logical=False)} cores), "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {sys.version.split()[0]}, "
          f"redis-server {'.'.join(map(str, version(binary)))}")
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-bench-coordinator-"))
    print(f"logs: {workdir}")
    print()
    try:
        if sections & {1, 2}:
            throughput_and_latency(workdir, tasks, [1] if quick else [1, 2], [1, 2, 4],
                                   latency_n if 2 in sections else 0)
            print(flush=True)
        if 3 in sections:
            settings = [DEFAULT_COORDINATOR]
            if not quick:
                settings.append(("--lease-timeout", "8", "--sweep-interval", "0.3"))
            recovery(workdir, settings, trials)
            print(flush=True)
        if 4 in sections:
            scale(workdir, sizes, cfg, args.profile, events_sizes, burst_sizes)
            print()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything started", file=sys.stderr)
        return 130
    finally:
        PROCS.stop_all()
    print(f"total {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
