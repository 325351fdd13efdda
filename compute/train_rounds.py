"""When a training round closes: a quorum of replicas arrived, or its deadline passed.

Two keys per round in the team's Redis (``compute.keys``): the arrivals
(replica -> a small JSON row) and who closes it. Both changes are one Lua
call, so they never interleave: an arrival after the close is *late* (not
recorded, its Δ unused), and exactly one task closes a round. The closer is
named by its task id, so the same task delivered again after its worker died
closes it again (the close is idempotent), while any other is told no.

Late Δs are dropped, not applied with a staleness weight: a Δ computed from
round r's θ points where θ was, and once the round closed it would be
applied to θ of r+1 or later (the stale-gradient problem of asynchronous SGD,
worse with H inner steps); the replica's work is the only loss, and a
replica checks for the close at every checkpoint, so it stops early.
"""

from __future__ import annotations

import json
from typing import Any

from compute import keys

_ARRIVE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HLEN', KEYS[1])
"""

_CLOSE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

LATE = -1


def arrive(client: Any, job: str, number: int, replica: int, row: dict[str, Any],
           ttl: int) -> int:
    """Record replica ``replica``'s arrival; the count of arrivals, or LATE once closed."""
    return int(client.eval(_ARRIVE, 2, keys.train_arrived(job, number),
                           keys.train_closed(job, number), str(replica),
                           json.dumps(row, separators=(",", ":")), ttl))


def close(client: Any, job: str, number: int, closer: str, ttl: int
          ) -> dict[int, dict[str, Any]] | None:
    """Take the round for ``closer``: its arrivals (replica -> row), or None if another has it."""
    found = client.eval(_CLOSE, 2, keys.train_arrived(job, number),
                        keys.train_closed(job, number), closer, ttl)
    if found is None:
        return None
    pairs = [v.decode() if isinstance(v, bytes) else v for v in found]
    return {int(pairs[i]): json.loads(pairs[i + 1]) for i in range(0, len(pairs), 2)}


def count(client: Any, job: str, number: int) -> int:
    return int(client.hlen(keys.train_arrived(job, number)))


def is_closed(client: Any, job: str, number: int) -> bool:
    return bool(client.exists(keys.train_closed(job, number)))
