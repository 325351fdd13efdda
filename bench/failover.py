"""Failover benchmark: the broker's primary dies under load, idle-accel beside stock Celery.

    python bench/failover.py [--tasks 200] [--cap 240] [--only sentinel|quorum]

Two cases, each engine started on loopback by the benchmark:

- **Redis Sentinel**: a primary, a replica and three sentinels
  (``worker.local.sentinel_group``); broker and results on the ``sentinel://``
  URL; the primary is killed with SIGKILL.
- **RabbitMQ quorum queues**: a 3-node cluster (``worker.local.rabbit_cluster``)
  with every client connected through node 1, where the queues' leaders live;
  node 1 is killed with SIGKILL. Results on a plain private Redis.

For each case and worker kind (``idle-accel worker --mode dedicated``; stock
``celery worker`` from ``bench/stock_app.py`` with the same engine options
Celery documents: ``master_name``, ``task_default_queue_type=quorum``), two
workers of 2 processes run ``--tasks`` tasks of 0.1 s of CPU; the primary dies
once a quarter are done. Printed: the engine's own failover (Sentinel: until
the replica is named primary), the time from the kill to the first task done
after it and to the last, tasks that ran twice, and tasks lost (not done
within ``--cap`` s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.app import create_app
from compute.settings import Settings
from worker.local.rabbit_cluster import RabbitCluster
from worker.local.redis_server import RedisServer
from worker.local.sentinel_group import MASTER, SentinelGroup
from worker.local.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]


def workers(kind: str, tag: str, workdir: Path, env: dict[str, str]) -> list[WorkerProcess]:
    started = []
    for n in range(2):
        process = WorkerProcess(f"{tag}-{kind[:5]}-{n}", env=env,
                                log_path=workdir / f"{tag}-{kind}-{n}.log")
        if kind == "stock":
            process.argv = [sys.executable, "-m", "celery", "-A", "bench.stock_app", "worker",
                            "-Q", "cpu", "-c", "2", "-n", process.node, "-l", "INFO"]
        else:
            process.argv += ["--mode", "dedicated", "--concurrency", "2"]
        started.append(process.start())
    return started


def run(kind: str, tag: str, app, env: dict[str, str], prepare, kill, tasks: int,
        cap: float, workdir: Path) -> dict:
    started = workers(kind, tag, workdir, env)
    try:
        for process in started:
            process.wait_ready(app, timeout=90)
        results = [app.signature("compute.diag.burn", (0.1,)).delay() for _ in range(tasks)]
        while sum(r.ready() for r in results) < tasks // 4:
            time.sleep(0.05)
        prepare()
        wall = time.time()
        engine = kill()
        killed = time.monotonic() - (engine or 0.0)
        pending = list(results)
        while pending and time.monotonic() - killed < cap:
            still = []
            for r in pending:
                try:
                    ready = r.ready()
                except Exception:  # the backend itself failing over
                    ready = False
                if not ready:
                    still.append(r)
            pending = still
            time.sleep(0.05)
        # When each task's result was stored, by the worker's clock (this machine's): the
        # first and the last stored after the kill.
        after = sorted(stamp - wall for stamp in (_done_at(r) for r in results)
                       if stamp is not None and stamp > wall)
        first, last = (after[0], after[-1]) if after and not pending else (None, None)
        twice = sum(sum(p.log_text().count(f"[{r.id}] received") for p in started) > 1
                    for r in results)
        return {"engine": engine, "first": first, "last": last, "twice": twice,
                "lost": len(pending)}
    finally:
        for process in started:
            if process.alive:
                process.stop(timeout=20)


def _done_at(result) -> float | None:
    try:
        done = result.date_done  # result_extended: a datetime (UTC), or its ISO text
    except Exception:
        return None
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    if done is None:
        return None
    return done.replace(tzinfo=done.tzinfo or UTC).timestamp()


def sentinel_case(kind: str, args, workdir: Path) -> dict:
    group = SentinelGroup(workdir / f"sentinel-{kind}").start()
    try:
        url = group.url()
        env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
               "IDLE_ACCEL_SENTINEL_MASTER": MASTER, "STOCK_SENTINEL_MASTER": MASTER,
               "PYTHONPATH": str(ROOT)}
        app = create_app(Settings.load(broker_url=url, result_backend=url,
                                       sentinel_master=MASTER))
        try:
            return run(kind, "sen", app, env, group.wait_replicated, group.kill_primary,
                       args.tasks, args.cap, workdir)
        finally:
            app.close()
    finally:
        group.stop()


def quorum_case(kind: str, args, workdir: Path) -> dict:
    with RabbitCluster(3) as cluster, RedisServer(workdir / f"results-{kind}") as results:
        env = {"CELERY_BROKER_URL": cluster.url, "CELERY_RESULT_BACKEND": results.url(0),
               "IDLE_ACCEL_QUEUE_TYPE": "quorum", "STOCK_QUEUE_TYPE": "quorum",
               "PYTHONPATH": str(ROOT)}
        app = create_app(Settings.load(broker_url=cluster.url, result_backend=results.url(0),
                                       queue_type="quorum"))
        try:
            def kill() -> None:  # RabbitMQ's election is not timed apart: see "first"
                cluster.stop(0, kill=True)
            return run(kind, "qq", app, env, lambda: None, kill, args.tasks, args.cap, workdir)
        finally:
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--cap", type=float, default=240.0)
    parser.add_argument("--only", choices=("sentinel", "quorum"))
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {args.tasks} tasks "
          f"of 0.1 s CPU on 2 workers x 2 processes; cap {args.cap:g} s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-failover-"))
    cases = {"Sentinel": sentinel_case, "quorum": quorum_case}
    if args.only:
        cases = {k: v for k, v in cases.items() if k.lower() == args.only}
    rows = []
    for name, case in cases.items():
        for kind in ("idle-accel", "stock"):
            row = case(kind, args, workdir)
            rows.append((name, kind, row))
            print(f"{name:<10}{kind:<12}{row}", flush=True)

    def shown(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else f">{args.cap:g}"

    print("\nfailover: s from the kill (engine: the broker's own switch; first/last: "
          "tasks done after the kill)")
    print(f"{'engine':<10}{'worker':<12}{'switch':>8}{'first':>8}{'last':>8}{'twice':>7}"
          f"{'lost':>6}")
    for name, kind, row in rows:
        switch = f"{row['engine']:.1f}" if row["engine"] is not None else "-"
        print(f"{name:<10}{kind:<12}{switch:>8}{shown(row['first']):>8}"
              f"{shown(row['last']):>8}{row['twice']:>7}{row['lost']:>6}")


if __name__ == "__main__":
    main()
