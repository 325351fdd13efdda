"""What Flower's Fleet page shows, built from status reports, credit and the capacity history.

Pure: no Redis, no Tornado. Report fields come from volunteers' machines, so
each is read defensively (a malformed report shows "?" and breaks nothing);
HTML escaping is the template's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.capacity_history import KEEP, Sample

GIB = 1024**3


def hardware_text(document: dict[str, Any]) -> str:
    """``8 cores, 16 GiB, RTX 4090 24 GiB``, or ``?`` for a report our worker did not write."""
    hardware = document.get("hardware")
    if not isinstance(hardware, dict):
        return "?"
    try:
        text = f"{hardware.get('cores', '?')} cores, {hardware.get('ram_bytes', 0) / GIB:.0f} GiB"
        for gpu in hardware.get("gpus") or []:
            text += f", {gpu.get('name')} {gpu.get('memory_bytes', 0) / GIB:.0f} GiB"
    except (TypeError, ValueError, AttributeError):
        return "?"
    return text


def reasons_text(document: dict[str, Any]) -> str:
    """The policy's reasons for the owner state, joined; ``-`` when it gave none."""
    reasons = document.get("reasons")
    messages = [str(reason.get("message", "")) for reason in reasons
                if isinstance(reason, dict)] if isinstance(reasons, list) else []
    return "; ".join(message for message in messages if message) or "-"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Row:
    node: str
    state: str
    why: str
    mode: str
    region: str
    queues: str
    hardware: str
    running: str
    suspended: str
    credit: str
    age: str


def rows(workers: list[dict[str, Any]], credits: list[dict[str, Any]]) -> list[Row]:
    """One row per live worker, with its volunteer's credit (tasks, CPU- and GPU-seconds)."""
    by_node = {row["node"]: row for row in credits}
    found = []
    for document in workers:
        node = str(document.get("node"))
        earned = by_node.get(node)
        queues = document.get("consuming")
        found.append(Row(
            node=node, state=str(document.get("state", "?")), why=reasons_text(document),
            mode=str(document.get("mode", "?")), region=str(document.get("region") or "-"),
            queues=", ".join(map(str, queues)) if isinstance(queues, list) and queues
            else "(none)",
            hardware=hardware_text(document), running=str(document.get("running", 0)),
            suspended=str(document.get("suspended", 0)),
            credit=(f"{_plural(earned['tasks'], 'task')}, {earned['cpu_seconds']:.1f} CPU-s, "
                    f"{earned['gpu_seconds']:.1f} GPU-s") if earned else "-",
            age=f"{document.get('age', '?')} s"))
    return found


def fleet_mode(workers: list[dict[str, Any]], emergency: bool) -> str:
    """The mode in force, and how many workers' reports show it."""
    wanted = "emergency" if emergency else "normal"
    switched = sum(1 for document in workers if document.get("fleet_mode", "normal") == wanted)
    return f"{wanted.upper() if emergency else wanted}: {switched} of {len(workers)} workers"


@dataclass(frozen=True)
class Plot:
    """An SVG line chart of cores over the last hour: ``total`` and ``consuming`` polylines."""
    width: int
    height: int
    top: int  # the y axis' largest value (cores)
    total: str  # "x,y x,y ..." for <polyline points=...>
    consuming: str
    samples: int


def plot(samples: list[Sample], now: float, width: int = 720, height: int = 200) -> Plot:
    """Cores reported (total) and cores taking work (consuming), the last hour, left to right."""
    top = max([sample.cores for sample in samples] + [1])

    def points(value: str) -> str:
        return " ".join(
            f"{width * max(0.0, 1 - (now - sample.at) / KEEP):.1f},"
            f"{height * (1 - getattr(sample, value) / top):.1f}" for sample in samples)

    return Plot(width, height, top, points("cores"), points("consuming_cores"), len(samples))
