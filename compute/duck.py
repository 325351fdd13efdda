"""DuckDB, locked to the files a query may read: every DuckDB connection of the project.

A part runs SQL written by the team on a volunteer's machine, so its connection
may read only the files its part names (``allowed_paths``) and write only in a
private scratch folder (spilling, CSV slices). ``enable_external_access`` is off,
extensions neither install nor load (no network), and the configuration is
locked, so no statement can undo any of it (``SET``, ``ATTACH``, ``COPY ... TO``,
``INSTALL`` and ``read_csv('/etc/passwd')`` all fail with a permission error).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import psutil

from compute.errors import InvalidArgument

#: The tables of a SQL job: a part's slice of the input, and every part's rows at the merge.
SCAN = "__scan"
PARTIALS = "__partials"


def share_of_machine() -> tuple[int, int]:
    """Threads and bytes of memory for one task: the threads the worker gave each pool
    process (``IDLE_ACCEL_TASK_THREADS``, its cores over its concurrency) and the same share
    of 60 % of the machine's memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    threads = max(1, min(cores, int(os.environ.get("IDLE_ACCEL_TASK_THREADS", cores) or 1)))
    memory = int(psutil.virtual_memory().total * 0.6 * threads / cores)
    return threads, max(memory, 256 * 1024 * 1024)


def connect(*, read: Iterable[str] = (), scratch: str | None = None, threads: int = 1,
            memory_bytes: int = 1 << 30) -> Any:
    """A DuckDB connection that reads only ``read`` and writes only under ``scratch``."""
    import duckdb

    config: dict[str, Any] = {"threads": threads, "memory_limit": f"{memory_bytes // 2**20}MB",
                              "autoinstall_known_extensions": False,
                              "autoload_known_extensions": False}
    if scratch is not None:
        config["temp_directory"] = scratch
    connection = duckdb.connect(config=config)
    paths = sorted({os.path.abspath(p) for p in read})
    directories = [os.path.join(os.path.abspath(scratch), "")] if scratch else []
    connection.execute("SET allowed_paths = ?", [paths])
    connection.execute("SET allowed_directories = ?", [directories])
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def one_line(error: Exception) -> str:
    """DuckDB's message for ``error`` on one line (its caret drawing left out)."""
    text = str(error).strip()
    lines = []
    for line in text.splitlines():
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.strip())
    return " ".join(lines) or type(error).__name__


def engine_error(where: str, error: Exception) -> InvalidArgument:
    """A DuckDB error as the InvalidArgument a user sees."""
    return InvalidArgument(f"{where}: {one_line(error)}")
