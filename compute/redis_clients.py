"""Every Redis client of the project's own, made in one place: plain URLs and Redis Sentinel.

Celery and kombu make their own connections from the same URL and the
transport options in ``compute/app.py``; everything else (leases, status,
fleet, credit, verify, the coordinator, the CLI) calls :func:`connect`, so a
``sentinel://`` URL reaches the current primary everywhere.

A Sentinel URL is kombu's: one ``sentinel://`` part per sentinel, joined by
``;``; the user, password and database number (of the data nodes, not the
sentinels) are read from the first part that has them::

    sentinel://team:PASSWORD@10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379/0

The master's name and the sentinels' own password are transport options
(``master_name``, ``sentinel_kwargs``), as in Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.sentinel

SENTINEL = "sentinel"
REDIS_SCHEMES = ("redis", "rediss", SENTINEL)
DEFAULT_SENTINEL_PORT = 26379


def parts(url: str) -> list[str]:
    """The ``;``-separated URLs of ``url`` (one for a plain URL)."""
    return [part for part in url.split(";") if part.strip()]


def scheme(url: str) -> str:
    return urlsplit(parts(url)[0] if parts(url) else url).scheme


def is_sentinel(url: str | None) -> bool:
    return bool(url) and scheme(url) == SENTINEL


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int


def parse_sentinel(url: str) -> SentinelURL:
    """The sentinels, and the data nodes' login and database, of a ``sentinel://`` URL."""
    sentinels, username, password, db = [], None, None, 0
    for part in parts(url):
        split = urlsplit(part)
        if split.scheme != SENTINEL or not split.hostname:
            raise ValueError(f"every part of a Sentinel URL is sentinel://HOST:PORT; "
                             f"got {split.scheme}://{split.hostname or ''}")
        sentinels.append((split.hostname, split.port or DEFAULT_SENTINEL_PORT))
        if split.password is not None and password is None:
            username = unquote(split.username) if split.username else None
            password = unquote(split.password)
        path = split.path.strip("/")
        if path.isdigit():
            db = int(path)
    return SentinelURL(tuple(sentinels), username, password, db)


def connect(url: str, options: Mapping[str, Any] | None = None, *,
            timeout: float = 5.0) -> redis.Redis:
    """A client of the Redis at ``url``; for Sentinel, of the current primary.

    ``options``: Celery's transport options for that URL (``master_name``,
    ``sentinel_kwargs``); only a Sentinel URL needs them.
    """
    if not is_sentinel(url):
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    options = options or {}
    master = options.get("master_name")
    if not master:
        raise ValueError("a sentinel:// URL needs the master's name "
                         "(IDLE_ACCEL_SENTINEL_MASTER, Celery's 'master_name' option)")
    found = parse_sentinel(url)
    sentinel = redis.sentinel.Sentinel(
        list(found.sentinels), socket_timeout=timeout, socket_connect_timeout=timeout,
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout,
                         **dict(options.get("sentinel_kwargs") or {})})
    # Sentinel over TLS: the data nodes behind the sentinels speak it too, under the same CA.
    tls = {key: value for key, value in dict(options.get("sentinel_kwargs") or {}).items()
           if key.startswith("ssl")}
    return sentinel.master_for(master, username=found.username, password=found.password,
                               db=found.db, socket_timeout=timeout,
                               socket_connect_timeout=timeout, **tls)
