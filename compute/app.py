"""The Celery app: ``create_app(settings)`` and the module-level ``app``.

``celery -A compute.app worker|flower|inspect`` finds ``app`` here. It is built
on first access (PEP 562), so importing this module reads no environment;
``create_app`` builds an app from explicit settings for the CLI and tests.
Every task can be sent with ``verify=k`` (see :class:`IdleCelery`).
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from compute import queues as q
from compute import redis_clients, replication, signing, verify
from compute.sdk import route_by_needs
from compute.settings import Settings

#: Task modules every worker imports (heavy engines load on first use, from extras).
BUILTIN_TASK_MODULES = ("compute.diag", "compute.data", "compute.inference", "compute.render",
                        "compute.train")


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration the design rests on (see docs/architecture.md)."""
    transport = {
        # Redis only: how long a task's lease may go unrenewed before kombu hands
        # it to another worker, and how often kombu sweeps for such tasks.
        # Workers renew the leases of the tasks they hold (worker/lease.py).
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.unacked_restore_interval,
        "unacked_restore_throttle": settings.unacked_restore_throttle,
    }
    backend = {"visibility_timeout": settings.visibility_timeout}
    transport.update(settings.redis_options(settings.broker_url))
    backend.update(settings.redis_options(settings.backend_url))
    if settings.namespace:
        # An enrolled volunteer: every key and channel of kombu and of the result
        # backend lives in its namespace, the only one its Redis user may touch.
        transport["global_keyprefix"] = backend["global_keyprefix"] = settings.namespace
    tls = {}
    if settings.sentinel_tls:
        # Sentinel over TLS: the data nodes too (the sentinels' side is in sentinel_kwargs).
        use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": settings.sentinel_tls_ca}
        if redis_clients.is_sentinel(settings.broker_url):
            tls["broker_use_ssl"] = use_ssl
        if redis_clients.is_sentinel(settings.backend_url):
            tls["redis_backend_use_ssl"] = use_ssl
    return {
        **tls,
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        # Quorum queues: a send returns once a majority of the cluster's nodes hold the
        # message (publisher confirms), so losing the node it went through loses nothing.
        "broker_transport_options": transport if settings.broker_is_redis else
        ({"confirm_publish": True} if settings.queue_type == "quorum" else {}),
        "result_backend_transport_options": backend,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # volunteers reconnect for ever
        # JSON only: a pickled message is refused, never loaded.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        # A task is acknowledged only once it ended, and a worker holds no
        # more tasks than it runs: what it had goes back to the queue if it dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # On Redis an ack still works after a reconnect: keep running tasks (their
        # leases keep them here). On AMQP the broker requeues every unacknowledged
        # task of a lost connection at once and an ack cannot outlive its channel:
        # end the local copies, or two would run (one here, one requeued).
        "worker_cancel_long_running_tasks_on_connection_loss": not settings.broker_is_redis,
        # AMQP: a worker that vanished (or froze) is noticed by the broker, and its
        # tasks requeued, within about one visibility timeout, as leases do on Redis
        # (Celery's 120 s default took about 3 minutes).
        **({} if settings.broker_is_redis
           else {"broker_heartbeat": max(5.0, settings.visibility_timeout / 2)}),
        # A channel the broker closed (RabbitMQ's consumer_timeout: "delivery
        # acknowledgement timed out") is a reconnect, not a worker exit.
        "broker_channel_error_retry": True,
        # Flower and the CLI see tasks and their progress.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": settings.result_expires,
        # Redis restarting or cut off: storing a result retries (full-jitter
        # backoff from 10 ms up to 3 s; 40 tries, about a minute at most) instead
        # of failing a task whose work is done.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 40,
        "result_backend_base_sleep_between_retries_ms": 10,
        "result_backend_max_sleep_between_retries_ms": 3000,
        "task_queues": [Queue(name, Exchange(name), routing_key=name,
                              queue_arguments=_queue_arguments(settings))
                        for name in q.DECLARED],
        # Every queue made on demand (tiers, regions, a worker's --queues) is declared
        # the same way, by the sender and by every worker: RabbitMQ refuses a queue
        # redeclared with another type ("inequivalent arg 'x-queue-type'").
        "task_default_queue_type": settings.queue_type,
        "task_create_missing_queue_type": settings.queue_type,
        "task_default_queue": q.DEFAULT,
        "task_routes": (route_by_needs, q.ROUTES),
        "task_create_missing_queues": True,
    }


def _queue_arguments(settings: Settings) -> dict[str, str] | None:
    """RabbitMQ arguments of every task queue: ``x-queue-type`` for quorum queues.

    Quorum queues keep the direct exchanges of classic ones. Celery's native
    delayed delivery (topic exchanges) binds only the queues a worker knew at
    start, and a delayed message for any other queue (a tier or a region made on
    demand) would be dropped when due; ETA tasks are held by the worker instead,
    as with classic queues.
    """
    return {"x-queue-type": "quorum"} if settings.queue_type == "quorum" else None


class IdleCelery(Celery):
    """Celery, plus the ``verify=k`` option on every way of sending a task.

    ``task.delay``, ``apply_async``, signatures and ``send_task`` all end in
    ``send_task``: with ``verify=k`` (and ``tolerance=``) it sends k replicas
    to k distinct machines and returns the verdict's result (``compute/verify.py``).
    """

    def send_task(self, name: str, args: Any = None, kwargs: Any = None,
                  **options: Any) -> Any:
        k = options.pop("verify", None)
        tolerance = options.pop("tolerance", 0.0)
        if k is None:
            return self._send_one(name, args, kwargs, **options)
        return verify.send(self, name, args, kwargs, k, tolerance, self._send_one, **options)

    def _send_one(self, name: str, args: Any = None, kwargs: Any = None,
                  **options: Any) -> Any:
        key = self._signing_key()
        if key is not None:
            options["task_id"] = options.get("task_id") or str(uuid.uuid4())
            signing.sign_options(key, name, args, kwargs, options)
        result = super().send_task(name, args, kwargs, **options)
        fence = self._replication_fence()
        if fence is not None:
            fence.wait(f"task {name} [{result.id}]")
        return result

    def _replication_fence(self) -> Any:
        """With ``send_replicas``: waits, after each send, for the broker's replicas."""
        if not hasattr(self, "_idle_accel_fence"):
            settings = getattr(self, "idle_accel_settings", None)
            self._idle_accel_fence = None
            if settings is not None and settings.send_replicas:
                self._idle_accel_fence = replication.Fence(
                    settings.broker_url, settings.redis_options(settings.broker_url),
                    settings.send_replicas, settings.namespace or "")
        return self._idle_accel_fence

    def _signing_key(self) -> Any:
        """The team's private key when this app signs what it sends (loaded once)."""
        if not hasattr(self, "_idle_accel_signer"):
            settings = getattr(self, "idle_accel_settings", None)
            path = settings.signing_key if settings is not None else None
            self._idle_accel_signer = signing.load_private(path) if path else None
        return self._idle_accel_signer


def create_app(settings: Settings, *, main: str = "idle-accelerator") -> Celery:
    """A Celery app configured from ``settings``, with the built-in tasks."""
    from worker.celery_gate import install_worker_steps  # the one file of Celery internals

    app = IdleCelery(main, include=[*BUILTIN_TASK_MODULES, *settings.include],
                 task_cls="compute.base:BaseTask")
    app.conf.update(celery_config(settings))
    app.idle_accel_settings = settings
    app.idle_accel_namespace = settings.namespace  # compute/namespace.py: its own keys' prefix
    install_worker_steps(app)  # every worker of this app, plain `celery worker` too
    return app


def __getattr__(name: str) -> Celery:
    if name == "app":
        global app
        app = create_app(Settings.load())
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
