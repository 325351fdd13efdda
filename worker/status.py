"""What a worker tells the fleet: its owner state and reasons, mode, queues, hardware, tasks.

Each worker keeps one JSON document in Redis (``compute.keys.worker(node)``)
with a TTL of three report intervals, so a worker that vanishes disappears
from ``idle-accel fleet status`` on its own. The same document is in Celery's
``inspect stats`` (and so in Flower's worker page) under ``idle_accel``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from compute import keys

log = logging.getLogger(__name__)

#: A report lives this many intervals: one lost report does not hide a worker.
TTL_INTERVALS = 3


class Publisher:
    """Writes a worker's status document; failures are logged, never raised."""

    def __init__(self, client: Callable[[], Any], node: str, interval: float,
                 prefix: str = "") -> None:
        self._client = client
        self.key = prefix + keys.worker(node)
        self.ttl = max(1, round(TTL_INTERVALS * interval))

    def publish(self, document: dict[str, Any]) -> bool:
        try:
            self._client().set(self.key, json.dumps(document, separators=(",", ":")),
                               ex=self.ttl)
        except Exception as exc:  # the broker may be restarting: the next report retries
            log.debug("status not published: %s", exc)
            return False
        return True

    def withdraw(self) -> None:
        try:
            self._client().delete(self.key)
        except Exception as exc:
            log.debug("status not withdrawn: %s", exc)


def read_fleet(client: Any) -> list[dict[str, Any]]:
    """Every live worker's status document, sorted by node name."""
    names = sorted(client.scan_iter(match=keys.WORKER_PATTERN, count=500))
    found = []
    for raw in client.mget(names) if names else []:
        if raw is None:
            continue  # expired between the scan and the read
        try:
            document = json.loads(raw)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("node"), str):
            found.append(document)
    now = time.time()
    for document in found:
        at = document.get("at")
        at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else now
        document["age"] = round(max(0.0, now - at), 1)
    return sorted(found, key=lambda document: str(document.get("node")))
