"""Volunteer credit: CPU-seconds, GPU-seconds and tasks, counted once per successful task.

Counted in the pool process that ran the task, when it succeeds: the CPU time
the process spent on it (with any children it waited for) and, for a task
taken from a ``gpu`` queue, its wall time as GPU-seconds. A run that was
preempted never succeeds, so it earns nothing; a task that somehow succeeds
twice is credited once (the first). Stored in Redis, it survives restarts.
"""

from __future__ import annotations

import os
import time
from typing import Any

from compute import keys
from compute import queues as q

# One Lua call: mark the task credited (once, the marker holds 'CPU GPU' seconds: the
# claim a coordinator reads) and add to the volunteer's totals.
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'NX', 'EX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[2], 'tasks', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], 'cpu_seconds', ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[2], 'gpu_seconds', ARGV[2])
  redis.call('HSET', KEYS[2], 'last', ARGV[3])
  return 1
end
return 0
"""


def cpu_now() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Meter:
    """Started when a task starts in a pool process; ``finish`` gives what it used."""

    def __init__(self, queue: str) -> None:
        self.gpu = queue.split(q.REGION_SEPARATOR)[0].split(".")[0] == q.GPU
        self.cpu0, self.wall0 = cpu_now(), time.monotonic()

    def finish(self) -> tuple[float, float]:
        """(CPU seconds, GPU seconds) since the start."""
        wall = time.monotonic() - self.wall0
        return max(0.0, cpu_now() - self.cpu0), wall if self.gpu else 0.0


def record(client: Any, node: str, task_id: str, cpu: float, gpu: float, ttl: int,
           prefix: str = "") -> bool:
    """Credit ``node`` for ``task_id`` once; False when it was already credited.

    In a volunteer's namespace (``prefix``) this is only the volunteer's claim,
    kept beside its result: the coordinator grants the credit that counts.
    """
    return bool(client.eval(_RECORD, 2, prefix + keys.credited(task_id), prefix + keys.credit(node),
                            f"{cpu:.6f}", f"{gpu:.6f}", f"{time.time():.3f}", max(60, ttl)))


def table(client: Any) -> list[dict[str, Any]]:
    """Every volunteer's credit, most CPU-seconds first."""
    rows = []
    for key in client.scan_iter(match=keys.CREDIT_PATTERN, count=500):
        name = key.decode() if isinstance(key, bytes) else str(key)
        values = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes)
                  else v for k, v in client.hgetall(key).items()}
        rows.append({"node": name[len(keys.credit("")):],
                     "tasks": int(values.get("tasks", 0)),
                     "cpu_seconds": round(float(values.get("cpu_seconds", 0)), 3),
                     "gpu_seconds": round(float(values.get("gpu_seconds", 0)), 3),
                     "last": float(values.get("last", 0))})
    return sorted(rows, key=lambda row: (-row["cpu_seconds"], row["node"]))
