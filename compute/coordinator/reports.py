"""A volunteer's status report, as the coordinator may believe it: pure, no Redis.

Workers write their status (``worker/owner_loop.py``) into their own
namespace; the volunteer may write anything there. :func:`clean` keeps only
what the coordinator uses and shows, typed and bounded, and names the worker
after the enrolled volunteer, so a report cannot pose as another worker,
claim 4,096 cores or crash a reader. What a volunteer could still lie about
(its owner being away, its hardware within the bounds) gets it work it may
fail or drop, which the coordinator reissues.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from compute import queues as q

MAX_CONCURRENCY = 64
MAX_CORES = 512
MAX_QUEUES = 64
MAX_TEXT = 200
STATES = ("idle", "busy", "preempting")
_NODE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
#: The queues the coordinator serves volunteers from (``compute/queues.py``'s grammar,
#: built-in bases only; queues of other names are for dedicated workers).
TASK_QUEUE = re.compile(rf"^({q.CPU}|{q.GPU}|{q.EMERGENCY})(\.v?ram[0-9]{{1,4}})?"
                        r"(@[a-z0-9][a-z0-9-]{0,39})?$")


class BadReport(ValueError):
    """A report the coordinator ignores (the message says why)."""


def _int(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadReport(f"{what} must be a whole number from {low} to {high}")
    return value


def _number(value: Any, low: float, high: float, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    value = float(value)
    return min(high, max(low, value)) if math.isfinite(value) else default


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else ""


def node_for(volunteer: str, node: Any) -> str:
    """The node name shown for a volunteer's worker: ``VOLUNTEER@SUFFIX``, whatever it claims."""
    text = node if isinstance(node, str) else ""
    suffix = text.split("@", 1)[1] if "@" in text else text
    return f"{volunteer}@{suffix if _NODE.match(suffix) else 'worker'}"


def _queues(value: Any) -> list[str]:
    """Task queues only: a volunteer's word never names another key of the team's.

    Names that are no task queue (cpu, gpu or emergency, with an optional
    ``.ramN``/``.vramN`` tier and ``@region``) are left out: such work is for
    dedicated workers.
    """
    if not isinstance(value, list) or len(value) > MAX_QUEUES:
        raise BadReport(f"queues must be a list of at most {MAX_QUEUES} names")
    return [name for name in value if isinstance(name, str) and TASK_QUEUE.match(name)]


def _reasons(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    return [{"code": _text(r.get("code"), 40), "message": _text(r.get("message"))}
            for r in value[:8] if isinstance(r, dict)]


def _hardware(value: Any) -> dict[str, Any]:
    value = value if isinstance(value, dict) else {}
    gpus = value.get("gpus") if isinstance(value.get("gpus"), list) else []
    return {"cores": int(_number(value.get("cores"), 1, MAX_CORES, 1)),
            "ram_bytes": int(_number(value.get("ram_bytes"), 0, 2.0**50)),
            "gpus": [{"name": _text(g.get("name"), 80),
                      "memory_bytes": int(_number(g.get("memory_bytes"), 0, 2.0**42))}
                     for g in gpus[:16] if isinstance(g, dict)]}


def clean(volunteer: str, raw: Any, *, now: float | None = None,
          max_age: float = 30.0) -> dict[str, Any]:
    """The report of one of ``volunteer``'s workers, bounded; :class:`BadReport` if unusable."""
    if not isinstance(raw, dict):
        raise BadReport("a report is a JSON object")
    now = time.time() if now is None else now
    at = _number(raw.get("at"), 0, now + 5, default=-1.0)
    if at < 0 or now - at > max_age:
        raise BadReport("the report is stale or has no time")
    state = raw.get("state")
    if state not in STATES:
        raise BadReport(f"state must be one of {', '.join(STATES)}")
    return {
        "node": node_for(volunteer, raw.get("node")),
        "volunteer": volunteer,
        "mode": "volunteer",
        "at": round(at, 3),
        "state": state,
        "reasons": _reasons(raw.get("reasons")),
        "queues": _queues(raw.get("queues", [])),
        "consuming": _queues(raw.get("consuming", [])),
        "concurrency": _int(raw.get("concurrency", 1), 1, MAX_CONCURRENCY, "concurrency"),
        "running": int(_number(raw.get("running"), 0, MAX_CONCURRENCY)),
        "suspended": int(_number(raw.get("suspended"), 0, MAX_CONCURRENCY)),
        "host": _text(raw.get("host"), 128),
        "hardware": _hardware(raw.get("hardware")),
        "fleet_mode": "emergency" if raw.get("fleet_mode") == "emergency" else "normal",
    }
