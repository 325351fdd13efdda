"""Per-volunteer quotas: memory in its namespace, connections, messages per second.

A volunteer needs little of Redis: a queue of a few tasks, their results until
the coordinator takes them, a status report. One that holds more (a hostile
one pushing gigabytes, opening thousands of connections, flooding pub/sub)
is disabled within one quota period (``Config.quota_interval``): its Redis
user switched off, its connections dropped, its work reissued and its keys
removed. Redis itself is capped too (``maxmemory``, ``proto-max-bulk-len`` in
the shipped configs), so no single write can exhaust it in between.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from compute.coordinator import registry

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def namespace_usage(client: Any) -> Counter[str]:
    """Bytes used by each volunteer's namespace (one keyspace scan, ``MEMORY USAGE``)."""
    used: Counter[str] = Counter()
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=5)
        for key, size in zip(batch, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(size, int):
                used[key.split(b":", 2)[1].decode(errors="replace")] += size
        batch.clear()

    for key in client.scan_iter(match="vol:*", count=1000):
        batch.append(key if isinstance(key, bytes) else str(key).encode())
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    return used


class Quotas:
    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator
        self._last = time.time()
        self.disabled: list[tuple[str, str]] = []  # (volunteer, why), for tests and logs

    def maybe_enforce(self, now: float) -> None:
        config = self.coordinator.config
        elapsed = now - self._last
        if elapsed < config.quota_interval:
            return
        self._last = now
        relay = self.coordinator.relay
        # Swap the counter out (one assignment): the relay thread keeps counting into a new
        # one instead of changing this one while it is read.
        counts, relay.counts = relay.counts, Counter()
        rates = {name: count / max(elapsed, 1e-3) for name, count in list(counts.items())}
        client = self.coordinator.client
        used = namespace_usage(client)
        for volunteer in self.coordinator.roster.active():
            why = None
            if used[volunteer.name] > config.quota_bytes:
                why = (f"{used[volunteer.name] / MIB:.1f} MiB in its namespace, over its "
                       f"{config.quota_bytes / MIB:.0f} MiB quota")
            elif volunteer.connections is not None and \
                    volunteer.connections > config.max_connections:
                why = (f"{volunteer.connections} connections, over its quota of "
                       f"{config.max_connections}")
            elif rates.get(volunteer.name, 0.0) > config.max_messages_per_second:
                why = (f"{rates[volunteer.name]:.0f} pub/sub messages a second, over its quota "
                       f"of {config.max_messages_per_second:.0f}")
            if why is not None:
                self.disable(volunteer.name, why)

    def disable(self, name: str, why: str) -> None:
        log.error("volunteer %s disabled: %s", name, why)
        self.disabled.append((name, why))
        try:
            registry.disable(self.coordinator.client, name, why)
        except Exception as exc:  # no admin rights: its work is still reissued
            log.error("volunteer %s could not be switched off in Redis: %s", name, exc)
        volunteer = self.coordinator.roster.by_name.get(name)
        if volunteer is not None:
            volunteer.state = registry.DISABLED
        self.coordinator.retire(name)
