"""One line for a broker the CLI cannot use: which broker (no password), what went wrong, the fix.

Every ``idle-accel`` command that talks to Redis or RabbitMQ ends here on a
connection or login failure (``worker/cli/root.py``) instead of printing a
traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from kombu.exceptions import OperationalError

from compute import redis_clients
from compute.errors import ConfigError
from compute.settings import Settings, redact

#: What a failed login says (redis-py, Redis's own replies, AMQP).
LOGIN_FAILED = ("WRONGPASS", "invalid username-password", "Authentication required", "NOAUTH",
                "AUTH failed", "ACCESS_REFUSED", "invalid password", "AuthenticationError")

BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                 redis.exceptions.AuthenticationError, OperationalError, ConnectionError)


def _broker() -> str:
    try:
        return str(redact(Settings.load().broker_url))
    except ConfigError:
        return "CELERY_BROKER_URL"


def explain(exc: BaseException, url: str | None = None) -> str:
    """The line to print for ``exc``, a broker connection or login failure."""
    broker = str(redact(url)) if url else _broker()
    said = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if isinstance(exc, redis.exceptions.AuthenticationError) or any(
            marker.lower() in f"{type(exc).__name__} {said}".lower() for marker in LOGIN_FAILED):
        return (f"cannot log in to the broker at {broker}: {said}. Check the user and "
                f"password in CELERY_BROKER_URL.")
    return (f"cannot reach the broker at {broker}: {said}. Is it running there? Set "
            f"CELERY_BROKER_URL to your cluster's broker (`idle-accel demo` prints how).")


def login_refused(url: str, options: Mapping[str, Any] | None = None,
                  timeout: float = 5.0) -> str | None:
    """The line to print when the Redis broker at ``url`` refuses this login, else None.

    A worker checks this before it starts: a wrong or missing password never
    heals, so it exits with this line rather than retrying for ever. A broker
    that cannot be reached yet is not refused (None): the worker starts and
    Celery retries until it answers. AMQP logins are left to Celery.
    """
    if redis_clients.scheme(url) not in redis_clients.REDIS_SCHEMES:
        return None
    try:
        with redis_clients.connect(url, options, timeout=timeout) as client:
            client.ping()
    except redis.exceptions.AuthenticationError as exc:
        return explain(exc, url)
    except redis.exceptions.ResponseError as exc:  # NOAUTH and friends on some versions
        if any(marker.lower() in str(exc).lower() for marker in LOGIN_FAILED):
            return explain(exc, url)
    except (redis.exceptions.RedisError, OSError, ValueError):
        return None  # unreachable, TLS, a restart: Celery's retries handle it
    return None


def reach(url: str, options: Mapping[str, Any] | None = None, timeout: float = 5.0) -> None:
    """Ping the Redis at ``url`` once, raising its error at once (a client about to send work
    would otherwise wait out Celery's retries, 20 s, and end in a traceback)."""
    if redis_clients.scheme(url) not in redis_clients.REDIS_SCHEMES:
        return
    with redis_clients.connect(url, options, timeout=timeout) as client:
        client.ping()
