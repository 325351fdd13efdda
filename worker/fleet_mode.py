"""The fleet's mode: normal work, or every worker on the emergency queues.

The mode lives in Redis (``compute.keys.FLEET_MODE``), so a worker that joins
later learns it at start; ``idle-accel fleet emergency on|off`` writes it and
broadcasts it to every running worker at once (a Celery remote-control
command); workers also re-read it on every status report, so one that missed
the broadcast catches up within a report interval.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from compute import keys
from compute import queues as q


@dataclass(frozen=True)
class Mode:
    emergency: bool = False
    requeue_running: bool = False  # normal tasks held at the switch go back to the queue

    def to_json(self) -> dict[str, Any]:
        return {"emergency": self.emergency, "requeue_running": self.requeue_running,
                "at": round(time.time(), 3)}


def read(client: Any, prefix: str = "") -> Mode:
    """The mode in force; ``prefix``: a volunteer's namespace, where the coordinator relays it."""
    raw = client.get(prefix + keys.FLEET_MODE)
    if not raw:
        return Mode()
    try:
        data = json.loads(raw)
    except ValueError:
        return Mode()
    return Mode(bool(data.get("emergency")), bool(data.get("requeue_running")))


def write(client: Any, mode: Mode) -> None:
    if mode.emergency:
        client.set(keys.FLEET_MODE, json.dumps(mode.to_json()))
    else:
        client.delete(keys.FLEET_MODE)


def switch(client: Any, app: Any, mode: Mode) -> None:
    """Put ``mode`` in force: stored for workers that join later, broadcast to the running ones.

    Used by ``idle-accel fleet emergency`` and Flower's Fleet page alike.
    """
    write(client, mode)
    app.control.broadcast("idle_accel_fleet_mode", reply=False,
                          arguments={"emergency": mode.emergency,
                                     "requeue_running": mode.requeue_running})


def emergency_queues(region: str | None) -> tuple[str, ...]:
    """What a worker consumes in emergency mode: ``emergency`` and its region's twin."""
    return (q.EMERGENCY, q.regional(q.EMERGENCY, region)) if region else (q.EMERGENCY,)
