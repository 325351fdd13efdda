"""Enrolled volunteers: their Redis users (one each, confined by ACL) and their records.

``enroll`` creates the Redis user ``vol-NAME`` with a fresh password, allowed
only keys and channels under ``vol:NAME:`` (``compute/namespace.py``), and
returns the broker URL the volunteer's worker uses. ``ensure_users`` puts back
users a restarted Redis forgot (the coordinator calls it every sweep). ``disable`` (revoke, or a
quota breach) switches the user off and drops its connections at once; the
coordinator then reissues what it held. Records live in
:data:`compute.keys.VOLUNTEERS`; passwords are never stored, only their SHA-256
(as Redis itself keeps them), so a lost user can be restored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from compute import keys, namespace, redis_clients
from compute import queues as q
from compute.errors import ConfigError

ACTIVE, DISABLED = "active", "disabled"


@dataclass(frozen=True)
class Enrollment:
    name: str
    broker_url: str
    namespace: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "broker_url": self.broker_url, "namespace": self.namespace}


def volunteer_url(admin_url: str, name: str, password: str) -> str:
    """``admin_url`` (the broker as the admin reaches it) logged in as volunteer ``name``.

    A Sentinel URL keeps every sentinel; the volunteer's login goes in the first
    part (where kombu reads it), every other part carries none.
    """
    if ";" in admin_url:
        first, *rest = redis_clients.parts(admin_url)
        bare = [urlunsplit(p._replace(netloc=p.netloc.rsplit("@", 1)[-1]))
                for p in map(urlsplit, rest)]
        return ";".join([volunteer_url(first, name, password), *bare])
    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(namespace.username(name), safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _db(url: str) -> int:
    if redis_clients.is_sentinel(url):
        return redis_clients.parse_sentinel(url).db
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _admin_error(exc: redis.RedisError, what: str) -> ConfigError:
    return ConfigError(f"{what}: Redis refused ({exc}); run it with an admin user's "
                       "CELERY_BROKER_URL (ACL SETUSER and CLIENT KILL are admin commands)")


# KEYS: the fleet's names.  ARGV: name, where.  Claim a name, or say where it is taken.
_CLAIM = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found and found ~= ARGV[2] then return found end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
"""


def _where(admin_url: str, region: str | None) -> str:
    """Where an enrollment lives: its Redis (no credentials) and region."""
    split = urlsplit(redis_clients.parts(admin_url)[0])
    host = split.netloc.rsplit("@", 1)[-1]
    return json.dumps({"redis": f"{split.scheme}://{host}{split.path}", "region": region},
                      sort_keys=True)


def claim_name(names: Any, admin_url: str, name: str, region: str | None) -> None:
    """Claim ``name`` for the whole fleet (on the team's Redis, ``names``): re-enrolling it
    where it is enrolled is fine; anywhere else (another region or Redis) is refused."""
    taken = names.eval(_CLAIM, 1, keys.VOLUNTEER_NAMES, name, _where(admin_url, region))
    if taken:
        where = json.loads(taken)
        raise ConfigError(f"volunteer name {name!r} is already enrolled in region "
                          f"{where.get('region') or '(none)'} on {where.get('redis')}: names "
                          "are fleet-wide (credit and fleet status go by name); choose another")


def enroll(client: Any, admin_url: str, name: str, region: str | None = None,
           names: Any = None) -> Enrollment:
    """Create (or re-key) volunteer ``name``'s Redis user; its broker URL, with a new password.

    ``region``: the only region whose pinned work it may take (the coordinator
    believes the enrollment, never the volunteer's own report). ``names``: the
    team's Redis, where the fleet's names are claimed (default: ``client``, the
    team's own when no region has a Redis of its own).
    """
    namespace.check_name(name)
    if region is not None:
        try:
            q.check_region(region)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    claim_name(client if names is None else names, admin_url, name, region)
    password = secrets.token_urlsafe(24)
    digest = hashlib.sha256(password.encode()).hexdigest()
    try:
        client.execute_command("ACL", "SETUSER", namespace.username(name),
                               *namespace.acl_rules(name, digest, db=_db(admin_url)))
    except redis.RedisError as exc:
        raise _admin_error(exc, f"enroll {name}") from None
    client.hset(keys.VOLUNTEERS, name, json.dumps(
        {"state": ACTIVE, "enrolled": round(time.time(), 3), "reason": None,
         "region": region, "password_sha256": digest, "db": _db(admin_url)}))
    return Enrollment(name, volunteer_url(admin_url, name, password), namespace.prefix(name))


def disable(client: Any, name: str, reason: str) -> int:
    """Switch volunteer ``name``'s user off and drop its connections; how many were dropped."""
    user = namespace.username(name)
    raw = client.hget(keys.VOLUNTEERS, name)
    record = json.loads(raw) if raw else {"enrolled": None}
    record.update(state=DISABLED, reason=reason, disabled=round(time.time(), 3))
    client.hset(keys.VOLUNTEERS, name, json.dumps(record))
    try:
        client.execute_command("ACL", "SETUSER", user, "off", "resetpass")
        return int(client.execute_command("CLIENT", "KILL", "USER", user))
    except redis.ResponseError as exc:
        if "No such user" in str(exc):
            return 0
        raise _admin_error(exc, f"disable {name}") from None


def ensure_users(client: Any, found: dict[str, dict[str, Any]]) -> list[str]:
    """Re-create the Redis user of every active volunteer that Redis lost; their names.

    ACL users live in Redis's configuration, not its data: a Redis restarted
    without an ACL file (``ACL SAVE``) forgets them, while the records survive
    with the data (AOF). The record keeps the password's SHA-256 (never the
    password), so the coordinator puts the user back as it was.
    """
    users = {_text(u) for u in client.execute_command("ACL", "USERS")}
    restored = []
    for name, record in found.items():
        digest = record.get("password_sha256")
        if record.get("state") != ACTIVE or namespace.username(name) in users or not digest:
            continue
        client.execute_command("ACL", "SETUSER", namespace.username(name),
                               *namespace.acl_rules(name, str(digest),
                                                    db=int(record.get("db") or 0)))
        restored.append(name)
    return restored


def records(client: Any) -> dict[str, dict[str, Any]]:
    """Every enrolled volunteer's record, by name (malformed records are skipped)."""
    found = {}
    for name, raw in client.hgetall(keys.VOLUNTEERS).items():
        try:
            record = json.loads(raw)
            found[namespace.check_name(_text(name))] = record if isinstance(record, dict) else {}
        except (ValueError, ConfigError):
            continue
    return found


def active(client: Any) -> list[str]:
    """The names of volunteers allowed to work, sorted."""
    return sorted(name for name, record in records(client).items()
                  if record.get("state") == ACTIVE)
