"""Volunteer namespaces: one Redis user per volunteer, confined to its own keys and channels.

An enrolled volunteer ``NAME`` logs in to Redis as the user ``vol-NAME``; its
ACL lets it touch only keys and pub/sub channels that start with
``vol:NAME:``. A worker whose broker URL names such a user works inside that
namespace on its own: kombu's and Celery's ``global_keyprefix`` (broker and
result backend) put every queue, ``unacked`` entry, result, pidbox and event
channel there, and the project's own keys (status, leases, checkpoints,
fleet mode) take the same prefix (:func:`key`). The coordinator, trusted and
holding team or admin rights, moves work in and results out.

Pure: names, prefixes and ACL rules only; the Redis calls live in
``compute/coordinator/registry.py``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from compute.errors import ConfigError

#: A volunteer's Redis user is ``vol-NAME``; its keys and channels start with ``vol:NAME:``.
USER_PREFIX = "vol-"
KEY_PREFIX = "vol:"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")

#: What a volunteer worker runs on Redis (measured from ACL LOG on real workers:
#: kombu's Redis transport, Celery's result backend, the project's own keys).
#: Scripts are allowed: Redis checks every key a script touches against the ACL.
VOLUNTEER_COMMANDS = (
    "brpop", "rpop", "lpush", "rpush", "llen", "lrange", "ltrim", "lrem",
    "hget", "hset", "hdel", "hgetall", "hexists", "hsetnx", "hkeys", "hlen", "hmget",
    "hincrby", "hincrbyfloat",
    "zadd", "zrem", "zrange", "zrangebyscore", "zrevrangebyscore", "zcount", "zscore",
    "sadd", "srem", "smembers", "sismember", "scard",
    "get", "mget", "set", "setex", "setnx", "getdel", "incr", "incrby", "decr",
    "del", "unlink", "exists", "expire", "pexpire", "ttl", "pttl", "type",
    "time", "multi", "exec", "discard", "watch", "unwatch",
    "eval", "evalsha", "script|load", "script|exists",
    "publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe",
)


def check_name(name: str) -> str:
    """``name`` if it can name a volunteer (lowercase letters, digits, ``-``, ``_``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"volunteer name {name!r}: use 1 to 48 lowercase letters, digits, "
                          "'-' or '_', starting with a letter or digit")
    return name


def prefix(name: str) -> str:
    """The namespace of volunteer ``name``: every key and channel it may touch starts with it."""
    return f"{KEY_PREFIX}{check_name(name)}:"


def username(name: str) -> str:
    """The Redis user of volunteer ``name``."""
    return f"{USER_PREFIX}{check_name(name)}"


def volunteer_of(url: str | None) -> str | None:
    """The enrolled volunteer a broker URL logs in as (``redis://vol-NAME:...``), else None."""
    if not url:
        return None
    parts = urlsplit(url.split(";", 1)[0])  # a Sentinel URL: the login is in its first part
    if parts.scheme not in ("redis", "rediss", "sentinel"):
        return None
    user = unquote(parts.username or "")
    if not user.startswith(USER_PREFIX):
        return None
    name = user[len(USER_PREFIX):]
    return name if _NAME.match(name) else None


def of_url(url: str | None) -> str:
    """The key prefix a worker on this broker URL works under ('' outside any namespace)."""
    name = volunteer_of(url)
    return prefix(name) if name else ""


def of(app: Any) -> str:
    """The key prefix of a Celery app's own keys ('' for the team and dedicated workers)."""
    return str(getattr(app, "idle_accel_namespace", "") or "")


def key(app: Any, name: str) -> str:
    """Key ``name`` (from ``compute/keys.py``) as this app must write it."""
    return of(app) + name


def acl_rules(name: str, password_sha256: str, *, db: int = 0) -> list[str]:
    """``ACL SETUSER vol-NAME`` arguments: on, this password, its own keys and channels only.

    Every key pattern and channel pattern is the namespace; commands are the
    data commands a worker runs, nothing administrative, nothing that lists or
    reaches other keys (KEYS, SCAN, RANDOMKEY, MONITOR, CLIENT, CONFIG).
    """
    ns = prefix(name)
    if not re.fullmatch(r"[0-9a-f]{64}", password_sha256):
        raise ValueError("password_sha256 must be 64 lowercase hex digits")
    connection = ["+ping", "+hello", "+auth", "+client|setname", "+client|getname",
                  "+client|id", "+echo", "+quit", "+reset"]
    if db:  # a broker on another database: SELECT it (its keys are still the namespace)
        connection.append("+select")
    # PSUBSCRIBE patterns are matched literally against the ACL: kombu listens for
    # remote control on the pattern of its pidbox exchange, so that one is named.
    return ["reset", "on", f"#{password_sha256}", f"~{ns}*", f"&{ns}*",
            f"&{ns}/{db}.celery.pidbox", "-@all",
            *connection, *(f"+{command}" for command in VOLUNTEER_COMMANDS)]
