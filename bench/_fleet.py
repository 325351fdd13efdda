"""Workers for a benchmark: real ``idle-accel worker`` processes whose owner is always away."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.idle import hostfile
from worker.local.worker_process import WorkerProcess


@contextlib.contextmanager
def idle_workers(count: int, workdir: Path, env: dict[str, str], app: Any, *,
                 prefix: str = "bench") -> Iterator[list[WorkerProcess]]:
    """``count`` workers of concurrency 1, each with a sensor file saying idle, ready."""
    processes = []
    try:
        for index in range(count):
            name = f"{prefix}-{count}-{index}"
            owner = workdir / f"{name}.owner"
            hostfile.write(owner, {"state": "idle", "at": time.time()})
            processes.append(WorkerProcess(
                name, env=env, log_path=workdir / f"{name}.log",
                args=["--concurrency", "1", "--sensor", f"file:{owner}",
                      "--sensor-max-age", "0", "--idle-after", "0",
                      "--loglevel", "WARNING"]).start())
        for process in processes:
            process.wait_ready(app, timeout=60)
        yield processes
    finally:
        for process in processes:
            process.stop()
