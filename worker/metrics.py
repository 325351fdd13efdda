"""The fleet as Prometheus metrics: what Flower's ``/metrics`` cannot say.

Flower counts tasks and events; it has no figure for "is this volunteer's
owner at the keyboard", "is it consuming", "how many tasks are suspended".
These come from the workers' status reports (``worker/status.py``) and the
queue lengths, read from Redis at each scrape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

STATES = ("idle", "busy", "preempting")

HELP = {
    "idle_accel_worker_up": "1 for each live worker (its status report has not expired).",
    "idle_accel_worker_owner_state": "1 for the worker's current owner state, 0 for the others.",
    "idle_accel_worker_consuming": "1 while the worker takes tasks from its queues.",
    "idle_accel_worker_running_tasks": "Tasks running on the worker.",
    "idle_accel_worker_suspended_tasks": "Tasks stopped in place because the owner is back.",
    "idle_accel_worker_busy_seconds": "Seconds the owner has been present without a break.",
    "idle_accel_worker_reason": "1 for each reason the owner counts as present.",
    "idle_accel_worker_cores": "CPU cores of the worker's machine.",
    "idle_accel_worker_gpus": "NVIDIA GPUs of the worker's machine.",
    "idle_accel_workers": "Live workers by mode and owner state.",
    "idle_accel_queue_length": "Tasks waiting in a queue.",
    "idle_accel_credit_tasks": "Successful tasks credited to a volunteer.",
    "idle_accel_credit_cpu_seconds": "CPU-seconds credited to a volunteer.",
    "idle_accel_credit_gpu_seconds": "GPU-seconds credited to a volunteer.",
}


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def render(workers: Iterable[dict[str, Any]], queues: dict[str, int],
           credits: Iterable[dict[str, Any]] = ()) -> str:
    """Prometheus text exposition (version 0.0.4) of the fleet."""
    series: dict[str, list[str]] = {name: [] for name in HELP}
    by_mode: Counter[tuple[str, str]] = Counter()
    for doc in workers:
        node = doc.get("node", "?")
        mode, state = doc.get("mode", "?"), doc.get("state", "?")
        by_mode[(mode, state)] += 1
        base = {"node": node}
        series["idle_accel_worker_up"].append(
            f"{_labels(node=node, mode=mode, region=doc.get('region') or '')} 1")
        for name in STATES:
            series["idle_accel_worker_owner_state"].append(
                f"{_labels(**base, state=name)} {int(state == name)}")
        series["idle_accel_worker_consuming"].append(
            f"{_labels(**base)} {int(bool(doc.get('consuming')))}")
        for key, metric in (("running", "running_tasks"), ("suspended", "suspended_tasks"),
                            ("busy_for", "busy_seconds")):
            series[f"idle_accel_worker_{metric}"].append(
                f"{_labels(**base)} {float(doc.get(key) or 0):g}")
        for reason in doc.get("reasons") or []:
            series["idle_accel_worker_reason"].append(
                f"{_labels(**base, code=reason.get('code', '?'))} 1")
        hardware = doc.get("hardware") or {}
        series["idle_accel_worker_cores"].append(f"{_labels(**base)} {hardware.get('cores', 0)}")
        series["idle_accel_worker_gpus"].append(
            f"{_labels(**base)} {len(hardware.get('gpus') or [])}")
    for (mode, state), count in sorted(by_mode.items()):
        series["idle_accel_workers"].append(f"{_labels(mode=mode, state=state)} {count}")
    for queue, length in sorted(queues.items()):
        series["idle_accel_queue_length"].append(f"{_labels(queue=queue)} {length}")
    for row in credits:
        for key in ("tasks", "cpu_seconds", "gpu_seconds"):
            series[f"idle_accel_credit_{key}"].append(
                f"{_labels(node=row['node'])} {float(row[key]):g}")
    lines = []
    for name, rows in series.items():
        lines += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge"]
        lines += [f"{name}{row}" for row in rows]
    return "\n".join(lines) + "\n"


def queue_lengths(client: Any, workers: list[dict[str, Any]],
                  always: Iterable[str] = ()) -> dict[str, int]:
    """Length of every queue a live worker serves, plus ``always``."""
    names = sorted({*always, *(q for doc in workers for q in doc.get("queues") or [])})
    if not names:
        return {}
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
