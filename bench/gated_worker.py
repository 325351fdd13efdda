"""Idle-gated worker benchmark, side by side with plain Celery in one run.

    python bench/gated_worker.py [--tasks 2000] [--rounds 3] [--events 30] [--kills 3]

- Throughput: ``idle-accel worker`` (owner away, read from a sensor file) vs
  plain ``celery -A compute.app worker`` with the same app, settings and pool
  (prefork, 2 processes), alternating, ``--tasks`` noop tasks with results
  per round; tasks/s, spread and the ratio gated/plain.
- Reaction: a burn runs; the sensor file turns busy; time until the pool
  process is stopped (read from /proc), and from idle again until it runs.
- Recovery: a worker holding a task is killed with SIGKILL (with its pool);
  time until the task runs on another worker.

Every part runs real processes against a private redis-server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.app import create_app
from compute.settings import Settings
from worker.idle import hostfile
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess


def owner_file(path: Path, state: str) -> None:
    hostfile.write(path, {"state": state, "at": time.time()})


def gated(name: str, workdir: Path, env: dict, concurrency: int = 2) -> WorkerProcess:
    sensor = workdir / f"{name}.owner"
    owner_file(sensor, "idle")
    return WorkerProcess(name, env=env, log_path=workdir / f"{name}.log",
                         args=["--concurrency", str(concurrency), "--sensor", f"file:{sensor}",
                               "--sensor-max-age", "0", "--idle-after", "0",
                               "--loglevel", "WARNING"])


def plain(name: str, workdir: Path, env: dict, concurrency: int = 2) -> WorkerProcess:
    process = WorkerProcess(name, env=env, log_path=workdir / f"{name}.log")
    process.argv = [sys.executable, "-m", "celery", "-A", "compute.app", "worker", "-Q", "cpu",
                    "-c", str(concurrency), "-n", process.node, "--without-gossip",
                    "--without-mingle", "-l", "WARNING"]
    return process


def flood(app, tasks: int) -> float:
    """Tasks per second for ``tasks`` noops, from the first send to the last result."""
    started = time.perf_counter()
    results = [app.signature("compute.diag.noop").apply_async() for _ in range(tasks)]
    for result in results:
        result.get(timeout=120)
    return tasks / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the worker's main process, of its pool processes)."""
    main = psutil.Process(pid)
    times = main.cpu_times()
    pool = 0.0
    for child in main.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child_times = child.cpu_times()
            pool += child_times.user + child_times.system
    return times.user + times.system, pool


def throughput(app, server: RedisServer, workdir: Path, env: dict, tasks: int,
               rounds: int) -> None:
    labels = ("idle-accel worker", "plain celery worker")
    figures: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for round_no in range(rounds):
        order = zip(labels, (gated, plain), strict=True)
        for label, make in (order if round_no % 2 == 0 else reversed(list(order))):
            process = make(f"tp-{round_no}-{label.split()[0]}", workdir, env).start()
            try:
                process.wait_ready(app)
                flood(app, 50)  # warm the pool
                before = cpu_seconds(process.pid)
                figures[label].append(flood(app, tasks))
                after = cpu_seconds(process.pid)
                cpu[label].append(tuple(1000 * (a - b) / tasks
                                        for a, b in zip(after, before, strict=True)))
            finally:
                process.stop()
            with server.client() as client:
                client.flushdb()
    print(f"throughput: {tasks} noop tasks with results, prefork c=2, {rounds} rounds each, "
          "alternating which goes first")
    print(f"{'worker':<22}{'median/s':>10}{'min/s':>10}{'max/s':>10}"
          f"{'main CPU ms/task':>18}{'pool CPU ms/task':>18}")
    for label, values in figures.items():
        main_ms = statistics.median(m for m, _ in cpu[label])
        pool_ms = statistics.median(p for _, p in cpu[label])
        print(f"{label:<22}{statistics.median(values):>10.0f}{min(values):>10.0f}"
              f"{max(values):>10.0f}{main_ms:>18.3f}{pool_ms:>18.3f}")
    ratios = [g / p for g, p in zip(figures["idle-accel worker"],
                                    figures["plain celery worker"], strict=True)]
    print(f"ratio gated/plain per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f}")


def status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


def wait_until(predicate, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.0005)
    return time.perf_counter()


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    def at(share):
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
    return (f"{1000 * at(0.5):>8.1f}{1000 * at(0.95):>8.1f}{1000 * max(ordered):>8.1f}"
            f"{1000 * statistics.mean(ordered):>8.1f}")


def reaction(app, workdir: Path, env: dict, events: int) -> None:
    sensor = workdir / "react.owner"
    worker = gated("react", workdir, env, concurrency=1)
    worker.start()
    try:
        worker.wait_ready(app)
        result = app.signature("compute.diag.burn", (600,)).delay()
        while result.state != "STARTED":
            time.sleep(0.01)
        pid = result.info["pid"]
        to_stopped, to_running = [], []
        for _ in range(events):
            time.sleep(0.2 + 0.1 * (len(to_stopped) % 7) / 7)  # any phase of the 10 Hz loop
            written = time.perf_counter()
            owner_file(sensor, "busy")
            to_stopped.append(wait_until(lambda: status(pid) == psutil.STATUS_STOPPED) - written)
            time.sleep(0.2)
            written = time.perf_counter()
            owner_file(sensor, "idle")
            to_running.append(wait_until(lambda: status(pid) != psutil.STATUS_STOPPED) - written)
        result.revoke(terminate=True)
    finally:
        worker.stop()
    print(f"reaction: sensor file written -> task process state, {events} events, ms")
    print(f"{'':<30}{'p50':>8}{'p95':>8}{'max':>8}{'mean':>8}")
    print(f"{'busy -> stopped':<30}{percentiles(to_stopped)}")
    print(f"{'idle -> running again':<30}{percentiles(to_running)}")


def recovery(app, workdir: Path, env: dict, kills: int) -> None:
    times = []
    for round_no in range(kills):
        doomed = gated(f"doomed-{round_no}", workdir, env, concurrency=1).start()
        doomed.wait_ready(app)
        result = app.signature("compute.diag.sleep", (60,)).delay()
        while result.state != "STARTED":
            time.sleep(0.01)
        survivor = gated(f"survivor-{round_no}", workdir, env, concurrency=1).start()
        survivor.wait_ready(app)
        killed = time.perf_counter()
        doomed.kill()
        wait_until(lambda r=result, s=survivor: r.state == "STARTED" and
                   (r.info or {}).get("hostname") == s.node, timeout=120)
        times.append(time.perf_counter() - killed)
        result.revoke(terminate=True)
        survivor.stop()
    print(f"recovery: SIGKILL of a worker and its pool -> its task running elsewhere, "
          f"{kills} kills, s")
    print(f"{'':<30}{'min':>8}{'median':>8}{'max':>8}")
    print(f"{'idle-accel (leases)':<30}{min(times):>8.1f}{statistics.median(times):>8.1f}"
          f"{max(times):>8.1f}")
    print(f"{'stock Celery on Redis':<30}  visibility_timeout (3600 s) + up to ~100 s sweep")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}")
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-bench-"))
    with RedisServer(workdir / "redis") as server:
        env = {"CELERY_BROKER_URL": server.url(0)}
        os.environ.update(env)
        app = create_app(Settings.load(broker_url=server.url(0)))
        throughput(app, server, workdir, env, args.tasks, args.rounds)
        print()
        reaction(app, workdir, env, args.events)
        print()
        recovery(app, workdir, env, args.kills)
        app.close()


if __name__ == "__main__":
    main()
