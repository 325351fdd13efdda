"""Recovery benchmark: a killed or frozen worker's task, on Redis and on RabbitMQ,
idle-accel beside stock Celery's defaults, in one run.

    python bench/recovery.py [--rounds 1] [--freeze 30] [--cap 240]

For each broker (a private redis-server; a fresh vhost on the machine's
RabbitMQ) and each worker kind (``idle-accel worker``; stock ``celery worker``
with Celery's defaults and late acknowledgement, ``bench/stock_app.py``):

- kill -9: a worker holding ``sleep(60)`` is killed with its pool; time until
  the task is STARTED on a second, idle worker.
- freeze: the holder's whole process tree is stopped (SIGSTOP: a closed lid,
  hibernation) for ``--freeze`` s; time until the task is STARTED on the second
  worker, and for idle-accel how many copies ran to the end ("copies": 1 means
  the thawed worker ended its own).

A case that has not moved after ``--cap`` s is shown as ``>cap``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
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
from worker.local.rabbit_vhost import Vhost
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess

TASK_SECONDS = 60


def start(kind: str, name: str, workdir: Path, env: dict) -> WorkerProcess:
    process = WorkerProcess(name, env=env, log_path=workdir / f"{name}.log")
    if kind == "stock":
        process.argv = [sys.executable, "-m", "celery", "-A", "bench.stock_app", "worker",
                        "-Q", "cpu", "-c", "1", "-n", process.node, "-l", "INFO"]
    else:
        owner = workdir / f"{name}.owner"
        hostfile.write(owner, {"state": "idle", "at": time.time()})
        process.argv += ["--concurrency", "1", "--sensor", f"file:{owner}",
                         "--sensor-max-age", "0", "--idle-after", "0"]
    return process.start()


def signal_tree(pid: int, sig: int) -> None:
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def moved(result, node: str, cap: float, since: float) -> float | None:
    while time.perf_counter() - since < cap:
        info = result.info if result.state == "STARTED" else None
        if isinstance(info, dict) and info.get("hostname") == node:
            return time.perf_counter() - since
        time.sleep(0.05)
    return None


def one(case: str, kind: str, app, workdir: Path, env: dict, freeze: float, cap: float,
        tag: str) -> tuple[float | None, int]:
    holder = start(kind, f"hold-{tag}", workdir, env)
    holder.wait_ready(app, timeout=60)
    result = app.signature("compute.diag.sleep", (TASK_SECONDS,)).delay()
    while result.state != "STARTED":
        time.sleep(0.02)
    other = start(kind, f"other-{tag}", workdir, env)
    other.wait_ready(app, timeout=60)
    began = time.perf_counter()
    copies = 1
    if case == "kill -9":
        holder.kill()
        took = moved(result, other.node, cap, began)
    else:
        signal_tree(holder.pid, signal.SIGSTOP)
        took = moved(result, other.node, max(cap, freeze), began)
        time.sleep(max(0.0, freeze - (time.perf_counter() - began)))
        signal_tree(holder.pid, signal.SIGCONT)
        if took is not None:  # did the thawed copy run on to the end too?
            with contextlib.suppress(Exception):  # a FAILURE is seen in the logs below
                result.get(timeout=TASK_SECONDS + 30)
            time.sleep(3)
            copies = sum(f"[{result.id}] succeeded" in w.log_text() for w in (holder, other))
    result.revoke(terminate=True)
    for worker in (holder, other):
        worker.stop(timeout=20) if worker.alive else None
    return took, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--freeze", type=float, default=30.0)
    parser.add_argument("--cap", type=float, default=240.0)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; task sleep"
          f"({TASK_SECONDS}); freeze {args.freeze:g} s; cap {args.cap:g} s")
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-recovery-"))
    rows = []
    with RedisServer(workdir / "redis") as server, Vhost() as vhost:
        for broker, url in (("Redis", server.url(0)), ("RabbitMQ", vhost.url)):
            env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": server.url(1),
                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            os.environ.update(env)
            app = create_app(Settings.load(broker_url=url, result_backend=server.url(1)))
            for case in ("kill -9", "freeze"):
                for kind in ("idle-accel", "stock"):
                    runs = [one(case, kind, app, workdir, env, args.freeze, args.cap,
                                f"{broker[:3]}-{case[:4]}-{kind[:5]}-{n}".lower().replace(" ", ""))
                            for n in range(args.rounds)]
                    times = [took for took, _ in runs if took is not None]
                    shown = (f"{statistics.median(times):.1f}" if len(times) == len(runs)
                             else f">{args.cap:g}")
                    copies = max(copies for _, copies in runs)
                    # copies: idle-accel only (a thawed stock worker's copy runs on, or
                    # not, depending on where the freeze caught it: not a stable figure)
                    shown_copies = copies if case == "freeze" and kind == "idle-accel" else ""
                    rows.append((broker, case, kind, shown, shown_copies))
                    print(f"{broker:<9}{case:<9}{kind:<12}{shown:>8} s  copies {rows[-1][4]}",
                          flush=True)
            app.close()
    print("\nrecovery: the task running elsewhere, s (median of rounds); copies: how many "
          "ran to the end after a freeze")
    print(f"{'broker':<10}{'case':<10}{'worker':<12}{'s':>8}{'copies':>8}")
    for broker, case, kind, shown, copies in rows:
        print(f"{broker:<10}{case:<10}{kind:<12}{shown:>8}{copies!s:>8}")


if __name__ == "__main__":
    main()
