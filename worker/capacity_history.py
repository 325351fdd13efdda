"""The fleet's capacity over time: cores reported and cores taking work, one sample per step.

Samples live in one Redis sorted set (``compute.keys.CAPACITY_HISTORY``),
scored by the start of their step and trimmed to ``KEEP`` seconds, so every
Flower of the team shares one history and a restarted Flower keeps it. Two
Flowers sampling the same step leave one sample (the later replaces it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from compute import keys

#: Seconds between samples, and how far back the history goes.
STEP = 15
KEEP = 3600


@dataclass(frozen=True)
class Sample:
    at: float
    workers: int
    consuming_workers: int
    cores: int
    consuming_cores: int
    gpus: int
    consuming_gpus: int


def _count(value: Any) -> int:
    """A report's number, or 0 for anything a worker's own code would not have written."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    return max(0, min(int(value), 1 << 20))


def measure(workers: Iterable[dict[str, Any]], at: float) -> Sample:
    """The fleet's capacity from its status reports: what is there, what takes work."""
    totals = [0] * 6
    for document in workers:
        hardware = document.get("hardware")
        hardware = hardware if isinstance(hardware, dict) else {}
        gpus = hardware.get("gpus")
        cores, gpu_count = _count(hardware.get("cores")), len(gpus) if isinstance(gpus, list) else 0
        consuming = document.get("consuming")
        taking = int(isinstance(consuming, list) and bool(consuming))
        for index, value in enumerate((1, taking, cores, cores * taking, gpu_count,
                                       gpu_count * taking)):
            totals[index] += value
    return Sample(at, *totals)


def record(client: Any, sample: Sample) -> None:
    """Keep ``sample`` as its step's one sample; forget what is older than ``KEEP``."""
    step = int(sample.at // STEP * STEP)
    with client.pipeline() as pipe:
        pipe.zremrangebyscore(keys.CAPACITY_HISTORY, step, step)
        pipe.zadd(keys.CAPACITY_HISTORY, {json.dumps(asdict(sample)): step})
        pipe.zremrangebyscore(keys.CAPACITY_HISTORY, "-inf", f"({step - KEEP}")
        pipe.execute()


def read(client: Any, now: float | None = None) -> list[Sample]:
    """The last ``KEEP`` seconds of samples, oldest first (malformed ones skipped)."""
    now = time.time() if now is None else now
    found = []
    for raw in client.zrangebyscore(keys.CAPACITY_HISTORY, now - KEEP, "+inf"):
        try:
            found.append(Sample(**json.loads(raw)))
        except (TypeError, ValueError):
            continue
    return found
