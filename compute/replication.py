"""Sends that survive a failover: wait until the broker's replicas hold what was sent.

Redis replicates asynchronously: a task whose send returned may still be only
on the primary, and a failover in that moment loses it, with nothing anywhere
to say it existed (the coordinator never saw it). With
``IDLE_ACCEL_SEND_REPLICAS=N`` the team's app follows every send with a write of
its own and ``WAIT N``: the replicas apply the primary's writes in order, so
once N of them hold the later write they hold the task too. A send whose task
is not on N replicas within :data:`TIMEOUT_MS` raises :class:`NotReplicated`:
the task was sent (it is on the primary and will run unless a failover comes
first), and the caller knows it is not yet safe.
"""

from __future__ import annotations

from typing import Any

from compute import keys, redis_clients
from compute.errors import IdleAccelError

TIMEOUT_MS = 5000
FENCE = f"{keys.PREFIX}send-fence"


class NotReplicated(IdleAccelError):
    """A task was sent, but fewer replicas than asked for hold it yet."""


class Fence:
    def __init__(self, url: str, options: dict[str, Any], replicas: int,
                 namespace: str = "") -> None:
        self.replicas = replicas
        self.key = f"{namespace}{FENCE}"
        self._client = redis_clients.connect(url, options, timeout=TIMEOUT_MS / 1000 + 5)

    def wait(self, what: str) -> int:
        """Until ``replicas`` replicas hold everything sent so far; their count."""
        pipe = self._client.pipeline(transaction=False)
        pipe.incr(self.key)
        pipe.execute_command("WAIT", self.replicas, TIMEOUT_MS)
        acked = int(pipe.execute()[1])
        if acked < self.replicas:
            raise NotReplicated(
                f"{what} was sent, but only {acked} of {self.replicas} replica(s) "
                f"(IDLE_ACCEL_SEND_REPLICAS) acknowledged it within {TIMEOUT_MS} ms: a "
                "failover now would lose it; check the replicas (INFO replication)")
        return acked

    def close(self) -> None:
        self._client.close()
