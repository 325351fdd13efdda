"""Task module benchmark: render, embeddings and aggregation on 1 and 2 real workers.

    python bench/modules.py [--quick]

- Render: one frame of the demo scene in 8 tiles, on one worker and on two
  (one pool process and one core each): seconds, speed-up and efficiency per
  core, beside the same frame rendered whole in this process (all cores)
  without Celery.
- Embeddings: documents per second of an embed job, one and two workers.
- Aggregation: rows per second of a filter + group-by job over a CSV and a
  Parquet file, one and two workers, beside pandas on the whole file.

Workers are warmed first (model and Blender loaded), so the figures are the
steady state a long-running volunteer sees.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fleet import idle_workers

from compute import plans, render
from compute.app import create_app
from compute.settings import Settings
from worker.local.redis_server import RedisServer

LOCAL_RENDER = """
import sys, time
from unittest import mock
sys.path.insert(0, {root!r})
from compute import render
with mock.patch.object(type(render.frame), "request",
                       mock.Mock(hostname="local", id=None, called_directly=True), create=True):
    started = time.perf_counter()
    render.frame.run(str(render.DEMO_SCENE), 1, {out!r}, {settings!r})
print(time.perf_counter() - started)
"""

SPEC = {"filter": [["amount", ">", 20.0]], "group_by": ["country"],
        "aggregate": {"total": ["amount", "sum"], "avg": ["amount", "mean"],
                      "rows": ["*", "count"]}}


def timed(app, job) -> float:
    started = time.perf_counter()
    app.AsyncResult(job.assemble).get(timeout=3600)
    return time.perf_counter() - started


def warm(app, workdir: Path, module: str, corpus: str, count: int) -> None:
    """Load Blender or the model in every worker's pool process (one part each)."""
    if module == "render":
        small = {"samples": 1, "seed": 0, "resolution": [16, 16]}
        job = plans.render_tiles(app, str(render.DEMO_SCENE), 1, str(workdir / "warm.png"),
                                 grid=(count, 1), settings=small)
    elif module == "embed":
        job = plans.embed(app, corpus, str(workdir / "warm.npy"), rows_per_part=500)
    else:
        return
    app.AsyncResult(job.assemble).get(timeout=600)


def measure(app, workdir: Path, module: str, count: int, settings: dict, corpus: str,
            docs: int, rows: int) -> float:
    """Seconds for the render; documents or rows per second for the others."""
    if module == "render":
        return timed(app, plans.render_tiles(app, str(render.DEMO_SCENE), 1,
                                             str(workdir / f"r{count}.png"), grid=(4, 2),
                                             settings=settings))
    if module == "embed":
        return docs / timed(app, plans.embed(app, corpus, str(workdir / f"e{count}.npy"),
                                             rows_per_part=100))
    chunk = max(1, (workdir / "t.csv").stat().st_size // 16)
    return rows / timed(app, plans.aggregate(app, str(workdir / f"t.{module}"), SPEC,
                                             str(workdir / f"a{count}.csv"), chunk_bytes=chunk))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller inputs.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-bench-"))
    docs = 400 if args.quick else 2000
    rows = 200_000 if args.quick else 2_000_000
    settings = {"samples": 16 if args.quick else 64, "seed": 1, "resolution": [320, 240]}
    corpus = workdir / "corpus.txt"
    rng = np.random.default_rng(3)
    words = ["volunteer", "compute", "idle", "owner", "render", "galaxy", "soup", "market",
             "bicycle", "football", "telescope", "python", "celery", "redis", "cat"]
    corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(docs)) + "\n")
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    frame = pd.DataFrame({"country": rng.choice(["fr", "de", "it", "es"], rows),
                          "amount": rng.normal(50, 20, rows).round(2)})
    frame.to_csv(workdir / "t.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), workdir / "t.parquet",
                   row_group_size=rows // 16)
    print(f"machine: {os.cpu_count()} CPUs; render 320x240, {settings['samples']} samples, "
          f"8 tiles; {docs} documents; {rows:,} rows")

    # The reference render runs in its own process: Blender's threads would
    # otherwise linger in this one and compete with the workers.
    local_render = float(subprocess.run([sys.executable, "-c", LOCAL_RENDER.format(
        root=str(Path(__file__).resolve().parents[1]), out=str(workdir / "local"),
        settings=settings)], check=True, capture_output=True, text=True).stdout.split()[-1])
    local_pandas = {}
    for kind in ("csv", "parquet"):
        started = time.perf_counter()
        table = pd.read_csv(workdir / "t.csv") if kind == "csv" else pd.read_parquet(
            workdir / "t.parquet")
        kept = table[table.amount > 20.0]
        kept.groupby("country").amount.agg(["sum", "mean", "size"])
        local_pandas[kind] = rows / (time.perf_counter() - started)

    figures = {}
    with RedisServer(workdir / "redis") as server:
        env = {"CELERY_BROKER_URL": server.url(0)}
        app = create_app(Settings.load(broker_url=server.url(0)))
        # One core per worker, and fresh workers for each module (engines
        # never share a process here): 1 worker uses one core, 2 use two.
        for module in ("render", "embed", "csv", "parquet"):
            for count in (1, 2):
                with idle_workers(count, workdir, {**env, "IDLE_ACCEL_TASK_THREADS": "1"}, app):
                    warm(app, workdir, module, str(corpus), count)
                    figures[(module, count)] = measure(app, workdir, module, count, settings,
                                                       str(corpus), docs, rows)
        app.close()

    one, two = figures[("render", 1)], figures[("render", 2)]
    print()
    print(f"{'render, 8 tiles':<34}{'seconds':>10}{'speed-up':>10}{'per core':>10}")
    print(f"{'whole frame, one process, all cores':<34}{local_render:>10.2f}")
    print(f"{'1 worker':<34}{one:>10.2f}{1.0:>10.2f}{1.0:>10.2f}")
    print(f"{'2 workers':<34}{two:>10.2f}{one / two:>10.2f}{one / two / 2:>10.2f}")
    print()
    print(f"{'throughput':<34}{'1 worker':>12}{'2 workers':>12}{'pandas':>12}")
    print(f"{'embeddings / s':<34}{figures[('embed', 1)]:>12.0f}{figures[('embed', 2)]:>12.0f}")
    print("(one core per worker)")
    for kind in ("csv", "parquet"):
        print(f"{'aggregation rows / s, ' + kind:<34}{figures[(kind, 1)]:>12,.0f}"
              f"{figures[(kind, 2)]:>12,.0f}{local_pandas[kind]:>12,.0f}")


if __name__ == "__main__":
    main()
