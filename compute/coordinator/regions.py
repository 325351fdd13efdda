"""Regions on separate brokers: what a regional coordinator keeps on the team's Redis.

A regional coordinator (``idle-accel coordinator --region R``) serves the
volunteers of one regional Redis (``IDLE_ACCEL_REGION_REDIS_URL``) and pulls
work from the team's Redis. A move between two Redis servers is not one
atomic call, so the team's Redis keeps, per region:

- ``region:R:out``: every team message out in region R, from the moment it is
  taken (one Lua call: pop from the team list and record it) until its team
  result is stored, or until it goes back to its team list (one Lua call:
  forget it and push it back, only if it was still recorded, so never twice);
- ``region:R:alive``: R's heartbeat, renewed by its active coordinator, with a
  TTL of ``--region-timeout``.

On start, and every sweep, R's coordinator reconciles its out-records with its
regional ledger: an out-record with no assignment (the coordinator stopped
between taking and placing, or between voiding and pushing back) goes back to
its team list. When R's heartbeat has expired (its Redis or its coordinator
gone for ``--region-timeout``), any other coordinator pushes every message out
in R back to its team list, in one Lua call on the team's Redis, so it happens
once and no task of R is lost; those already running in R may run twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from compute import keys, redis_clients
from compute import queues as q
from compute.errors import ConfigError
from compute.settings import read_secret

log = logging.getLogger(__name__)

#: The regional Redis of ``idle-accel coordinator --region`` and of a regional enrollment.
URL_VARIABLE = "IDLE_ACCEL_REGION_REDIS_URL"
URL_FILE_VARIABLE = "IDLE_ACCEL_REGION_REDIS_URL_FILE"
#: The master's name of a ``sentinel://`` regional URL (default: IDLE_ACCEL_SENTINEL_MASTER's).
SENTINEL_MASTER_VARIABLE = "IDLE_ACCEL_REGION_SENTINEL_MASTER"

# KEYS: team list, out.  Pop the list's next message and record it as out, in one step.
_TAKE = """
local raw = redis.call('RPOP', KEYS[1])
if not raw then return false end
redis.call('HSET', KEYS[2], redis.sha1hex(raw), KEYS[1] .. '\\n' .. raw)
return raw
"""

# KEYS: out, team list.  ARGV: digest, message to push.  Only if it was still out.
_RELEASE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: out.  ARGV: digest.  Push one out-record back to its own team list.
_PUSH_BACK = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local cut = string.find(value, '\\n', 1, true)
if not cut then return 0 end
redis.call('RPUSH', string.sub(value, 1, cut - 1), string.sub(value, cut + 1))
return 1
"""

# KEYS: alive, out, stats.  A dead region's messages back to their team lists, all at once.
_RECOVER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local all = redis.call('HGETALL', KEYS[2])
if #all == 0 then return 0 end
for i = 2, #all, 2 do
  local value = all[i]
  local cut = string.find(value, '\\n', 1, true)
  if cut then redis.call('RPUSH', string.sub(value, 1, cut - 1), string.sub(value, cut + 1)) end
end
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'recovered', #all / 2)
redis.call('HINCRBY', KEYS[3], 'declared_dead', 1)
return #all / 2
"""


def digest(raw: bytes) -> str:
    """The out-record's field of a message (Redis's ``redis.sha1hex`` of the same bytes)."""
    return hashlib.sha1(bytes(raw), usedforsecurity=False).hexdigest()


def unpack(value: bytes) -> tuple[str, bytes]:
    """An out-record's (team list, message)."""
    source, sep, raw = bytes(value).partition(b"\n")
    if not sep:
        raise ValueError("an out-record is 'LIST\\nMESSAGE'")
    return source.decode(), raw


def regional_url(settings: Any) -> str | None:
    """The regional Redis URL from the settings (the ``_FILE`` variant wins), or None."""
    path = settings.region_redis_url_file
    if path:
        try:
            return read_secret(path, URL_FILE_VARIABLE)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return settings.region_redis_url or None


def connect_regional(settings: Any, url: str) -> Any:
    """A client of the regional Redis (``sentinel://`` too: its own master name, if given)."""
    if redis_clients.scheme(url) not in redis_clients.REDIS_SCHEMES:
        raise ConfigError(f"{URL_VARIABLE} must be a redis://, rediss:// or sentinel:// URL")
    options = dict(settings.redis_options(url))
    if options and settings.region_sentinel_master:
        options["master_name"] = settings.region_sentinel_master
    return redis_clients.connect(url, options, timeout=10)


def check_region(region: str) -> str:
    try:
        return q.check_region(region)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class Outbox:
    """Region ``region``'s records on the team's Redis (``client``: the team's)."""

    def __init__(self, client: Any, region: str) -> None:
        self.team = client
        self.region = check_region(region)
        self.out = keys.region_out(region)
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._push_back = client.register_script(_PUSH_BACK)
        self._beat = 0.0

    def take(self, team_list: str) -> bytes | None:
        """The next message of ``team_list``, recorded as out in this region (atomic)."""
        found = self._take(keys=[team_list, self.out])
        return bytes(found) if found is not None else None

    def release(self, team_list: str, raw: bytes, instead: bytes = b"") -> bool:
        """``raw`` is no longer out here: back to the front of ``team_list`` (``instead`` in
        its place, if given); False when it was no longer recorded (already pushed back)."""
        return bool(self._release(keys=[self.out, team_list], args=[digest(raw), instead or raw]))

    def done(self, raw: bytes) -> None:
        """``raw``'s team result is stored: it is out no more."""
        self.team.hdel(self.out, digest(raw))

    def reconcile(self, keep: set[str]) -> int:
        """Push back every out-record whose digest is not in ``keep`` (the ledger's)."""
        moved = 0
        for field in self.team.hkeys(self.out):
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name not in keep:
                moved += int(self._push_back(keys=[self.out], args=[name]))
        return moved

    def heartbeat(self, ttl: float, *, every: float = 1.0) -> None:
        """Renew this region's heartbeat (at most every ``every`` seconds)."""
        now = time.monotonic()
        if now - self._beat < every:
            return
        pipe = self.team.pipeline(transaction=False)
        pipe.set(keys.region_alive(self.region), json.dumps({"at": round(time.time(), 3)}),
                 px=max(1000, int(ttl * 1000)))
        pipe.sadd(keys.REGIONS, self.region)
        pipe.execute()
        self._beat = now

    def count(self) -> int:
        return int(self.team.hlen(self.out))


def known(client: Any) -> list[str]:
    """The regions registered on the team's Redis."""
    return sorted(r.decode() if isinstance(r, bytes) else str(r)
                  for r in client.smembers(keys.REGIONS))


def recover_dead(client: Any, own: str | None = None) -> dict[str, int]:
    """Push back the messages of every region whose heartbeat expired; {region: count}.

    One Lua call per region on the team's Redis: a region's out-records go back
    at most once, whichever coordinators try at the same time.
    """
    script = client.register_script(_RECOVER)
    moved = {}
    for region in known(client):
        if region == own:
            continue
        n = int(script(keys=[keys.region_alive(region), keys.region_out(region),
                             keys.region_stats(region)]))
        if n > 0:
            moved[region] = n
            log.warning("region %s is gone (no heartbeat): %d message(s) it held went back "
                        "to the team's queues; those it was running may run twice", region, n)
    return moved
