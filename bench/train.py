"""Training benchmark: DiLoCo on 1 and 2 real workers beside one process, to the same accuracy.

    python bench/train.py [--rounds 6] [--inner-steps 20] [--target 0.92]

Fine-tunes the shipped MiniLM (its top 2 layers and a head) into the four-topic
classifier of ``compute/assets/topics.csv``, with the same number of samples in
every run (rounds × replicas × inner steps × batch):

- **one process**: plain AdamW in this machine's one Python process (torch on
  every core), scored on the validation set after each round's worth of steps;
- **idle-accel, 1 worker / 2 workers**: ``submit train-classifier`` with 2
  replicas per round, on real ``idle-accel worker`` processes (one core each
  with two workers, both cores with one) and a dedicated worker that closes
  the rounds, on a real Redis.

Printed: wall seconds to the first validation accuracy ≥ ``--target`` and to
the end, the final accuracy, the bytes each replica moves per round (θ in, Δ
out) beside what per-step gradient exchange (DDP's all-reduce, about 2× the
gradient per step) would move in the same steps, and the peak memory of a
replica's process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fleet import idle_workers

from compute import plans
from compute.app import create_app
from compute.settings import Settings
from compute.train_store import read_rows
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess

TOPICS = Path(__file__).resolve().parents[1] / "compute" / "assets" / "topics.csv"

ONE_PROCESS = """
import json, resource, sys, time
import torch
from compute import train_loop, train_spec
spec = train_spec.check(json.loads(sys.argv[1]))
torch.set_num_threads(int(sys.argv[2]))
start = time.monotonic()
every = spec["replicas"] * spec["inner_steps"]
rows = []
data = train_loop.load_data(spec).validation
def report(step, run, loss):
    acc = run.model.evaluate(data)["accuracy"]
    rows.append({"round": step // every - 1, "val_accuracy": acc,
                 "seconds": time.monotonic() - start})
train_loop.local_training(spec, every * spec["rounds"], "cpu", every, report)
print(json.dumps({"rows": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def settings(args: argparse.Namespace) -> dict:
    return {"rounds": args.rounds, "replicas": 2, "inner_steps": args.inner_steps,
            "batch_size": 16, "lr": 5e-4, "seed": 0, "options": {"max_length": 32}}


def one_process(args: argparse.Namespace) -> dict:
    spec = {"job": "00000000-0000-4000-8000-000000000000", "output": "/unused",
            "data": str(TOPICS), **settings(args)}
    out = subprocess.run([sys.executable, "-c", ONE_PROCESS, json.dumps(spec),
                          str(os.cpu_count() or 1)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rows": found["rows"], "peak_rss_mb": found["peak_rss_mb"]}


def on_workers(args: argparse.Namespace, count: int, workdir: Path, env: dict, app) -> dict:
    threads = str(max(1, (os.cpu_count() or 1) // count))
    team = WorkerProcess(f"team-{count}", env={**env, "IDLE_ACCEL_TASK_THREADS": "1"},
                         log_path=workdir / f"team-{count}.log",
                         args=["--mode", "dedicated", "--queues", "team", "--concurrency", "1",
                               "--loglevel", "WARNING"]).start()
    try:
        team.wait_ready(app, timeout=60)
        with idle_workers(count, workdir, {**env, "IDLE_ACCEL_TASK_THREADS": threads}, app,
                          prefix="train"):
            output = workdir / f"model-{count}"
            started = time.time()
            job = plans.train_classifier(app, str(TOPICS), str(output), **settings(args))
            app.AsyncResult(job.assemble).get(timeout=3600)
            rows = read_rows(output / "metrics.jsonl")
    finally:
        team.stop()
    return {"rows": [{**row, "seconds": row["time"] - started} for row in rows],
            "peak_rss_mb": max(row.get("replica_peak_rss_mb") or 0 for row in rows),
            "bytes_per_replica": rows[0]["bytes_per_replica"],
            "replica_s": sum(row["replica_seconds"] for row in rows) / len(rows),
            "close_s": sum(row["close_seconds"] for row in rows) / len(rows)}


def reached(rows: list[dict], target: float) -> str:
    for row in rows:
        if row["val_accuracy"] >= target:
            return f"{row['seconds']:.1f}"
    return "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.92)
    args = parser.parse_args()
    results = {"one process": one_process(args)}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis")
        server.start()
        try:
            env = {"CELERY_BROKER_URL": server.url(0), "CELERY_RESULT_BACKEND": server.url(0)}
            app = create_app(Settings.load(broker_url=server.url(0)))
            for count in (1, 2):
                results[f"idle-accel, {count} worker{'s' * (count > 1)}"] = on_workers(
                    args, count, workdir, env, app)
            app.close()
        finally:
            server.stop()
    spec = settings(args)
    samples = spec["rounds"] * spec["replicas"] * spec["inner_steps"] * spec["batch_size"]
    print(f"MiniLM top 2 layers + head, topics.csv, {samples} samples "
          f"({spec['rounds']} rounds x {spec['replicas']} replicas x {spec['inner_steps']} "
          f"steps x {spec['batch_size']}), {os.cpu_count()} cores")
    print(f"{'run':<22} {'s to ' + str(args.target):>10} {'s total':>8} {'final acc':>9} "
          f"{'peak RSS MiB':>12}")
    for name, found in results.items():
        rows = found["rows"]
        print(f"{name:<22} {reached(rows, args.target):>10} {rows[-1]['seconds']:>8.1f} "
              f"{100 * rows[-1]['val_accuracy']:>8.2f}% {found['peak_rss_mb']:>12.0f}")
    for name, found in results.items():
        if "close_s" in found:
            print(f"{name}: per round, the slowest replica {found['replica_s']:.1f} s (model "
                  f"load, {spec['inner_steps']} steps, Δ written), the close "
                  f"{found['close_s']:.1f} s (Δs checked, outer step, validation scored)")
    moved = results["idle-accel, 2 workers"]["bytes_per_replica"]
    per_step = moved * spec["inner_steps"]
    print(f"bytes per replica per round: DiLoCo {moved / 1e6:.1f} MB (θ in, Δ out); "
          f"per-step gradient exchange over the same {spec['inner_steps']} steps "
          f"{per_step / 1e6:.1f} MB ({spec['inner_steps']}x)")


if __name__ == "__main__":
    main()
