"""Every Celery internal Idle Accelerator touches, in one file (pinned: Celery and kombu 5.7).

- :class:`GateStep` (consumer blueprint): hands the live consumer to the gate
  and, on every (re)start of the consumer (a broker reconnect restarts it),
  re-applies the queues the gate wants instead of assuming them.
- :class:`CeleryActuator`: consumes exactly the wanted queues through the
  consumer's own ``cancel_task_queue`` / ``add_task_queue``, scheduled on its
  event loop with ``consumer.call_soon`` (thread-safe; a direct call from the
  owner thread is not); lists the tasks the worker holds.
- :class:`OwnerStep` (worker blueprint): runs the owner loop beside the pool
  and stops it, releasing suspended tasks, when the worker shuts down.
- :class:`LeaseStep` (worker blueprint, every worker of the app, Redis only):
  renews the leases of held tasks (``worker/lease.py``); :class:`KeepHeldStep`
  keeps them through a lost connection, and acknowledgements land after a
  reconnect (``_acks_outlive_their_connection``).
- :class:`RefuseMalformedStep` and ``_drop_malformed_items``: a message Celery
  or kombu cannot read is logged and refused, never fatal.
- Credit signals and the ``idle_accel_fleet_mode`` remote-control command.
"""

from __future__ import annotations

import binascii
import logging
import threading
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery, bootsteps, signals
from celery.utils.objects import Bunch
from celery.worker import state as worker_state
from celery.worker.control import control_command
from kombu.transport import redis as kombu_redis

from compute.errors import PayloadTooLarge
from compute.sdk import max_message_bytes
from worker import credit
from worker.fleet_mode import Mode
from worker.gate import Held
from worker.lease import LeaseKeeper

log = logging.getLogger(__name__)

#: Attribute of the app that carries the owner loop into the bootsteps.
OWNER_ATTR = "idle_accel_owner"
#: How long the owner thread waits for the event loop to apply a queue change.
APPLY_TIMEOUT = 2.0


def _held_requests() -> list[Any]:
    # ``requests`` maps id -> request for every task the worker holds
    # (reserved, running, scheduled); copying a dict's values is atomic.
    return list(worker_state.requests.values())


def _tag(request: Any) -> str | None:
    message = getattr(request, "message", None)
    tag = getattr(message, "delivery_tag", None)
    return str(tag) if tag is not None else None


def held_tags() -> list[str]:
    return [tag for tag in map(_tag, _held_requests()) if tag]


def sync_queues(consumer: Any, names: Sequence[str]) -> None:
    """Make ``consumer`` consume exactly ``names`` (call on its event loop thread)."""
    task_consumer = consumer.task_consumer
    if task_consumer is None:
        return
    current = [queue.name for queue in task_consumer.queues]
    for name in current:
        if name not in names:
            consumer.cancel_task_queue(name)
    for name in names:
        if name not in current:
            consumer.add_task_queue(name)


class CeleryActuator:
    """The gate's hands on a Celery consumer (see :class:`worker.gate.Actuator`)."""

    def __init__(self) -> None:
        self.consumer: Any = None

    def set_queues(self, names: Sequence[str]) -> bool:
        consumer = self.consumer
        if consumer is None:
            return False  # no consumer yet, or reconnecting: GateStep.start applies it
        done = threading.Event()

        def apply() -> None:
            try:
                sync_queues(consumer, names)
            finally:
                done.set()

        consumer.call_soon(apply)
        return done.wait(APPLY_TIMEOUT)

    def held(self) -> list[Held]:
        return [Held(task_id=request.id, name=request.name,
                     worker_pid=request.worker_pid, delivery_tag=_tag(request),
                     queue=str((request.delivery_info or {}).get("routing_key") or ""))
                for request in _held_requests()]


class GateStep(bootsteps.StartStopStep):
    """Consumer step: attach the consumer to the gate and re-apply the wanted queues."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.owner = getattr(c.app, OWNER_ATTR, None)
        self.enabled = self.owner is not None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        # Runs on the consumer's thread before its event loop polls: nothing
        # is consumed between the Tasks step's start and this.
        sync_queues(c, self.owner.gate.reapply_queues())
        self.owner.gate.actuator.consumer = c

    def stop(self, c: Any) -> None:
        self.owner.gate.actuator.consumer = None

    shutdown = stop

    def info(self, c: Any) -> dict[str, Any]:
        return {"idle_accel": self.owner.document()}


class OwnerStep(bootsteps.StartStopStep):
    """Worker step: the owner loop runs while the worker does."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, w: Any, **kwargs: Any) -> None:
        self.owner = getattr(w.app, OWNER_ATTR, None)
        self.enabled = self.owner is not None
        super().__init__(w, **kwargs)

    def start(self, w: Any) -> None:
        signals.worker_shutting_down.connect(self._on_shutdown, weak=False)
        self.owner.start()

    def _on_shutdown(self, **_kwargs: Any) -> None:
        # First thing on SIGTERM: a suspended task would keep a warm shutdown
        # waiting for ever; end it so it goes back to the queue.
        self.owner.stop()

    def stop(self, w: Any) -> None:
        self.owner.stop()


class LeaseStep(bootsteps.StartStopStep):
    """Worker step: renew the leases of held tasks (Redis brokers only)."""

    def __init__(self, w: Any, **kwargs: Any) -> None:
        conf = w.app.conf
        self.url = conf.broker_url
        self.enabled = str(self.url).startswith(("redis://", "rediss://"))
        options = conf.broker_transport_options or {}
        self.interval = float(options.get("visibility_timeout", 3600)) / 3
        self.keeper: LeaseKeeper | None = None
        super().__init__(w, **kwargs)

    def start(self, w: Any) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        self.keeper = LeaseKeeper(lambda: client, held_tags, self.interval)
        self.keeper.start()

    def stop(self, w: Any) -> None:
        if self.keeper is not None:
            self.keeper.stop()

    def info(self, w: Any) -> dict[str, Any]:
        keeper = self.keeper
        return {"leases": {"interval": round(self.interval, 3),
                           "renewed": keeper.renewed if keeper else 0,
                           "lost": list(keeper.lost) if keeper else []}}


@control_command(args=[("emergency", bool), ("requeue_running", bool)],
                 signature="<emergency> <requeue_running>")
def idle_accel_fleet_mode(state: Any, emergency: bool = False,
                          requeue_running: bool = False) -> dict[str, str]:
    """Remote control: switch this worker to the emergency queues, or back."""
    owner = getattr(state.consumer.app, OWNER_ATTR, None)
    if owner is None:
        return {"ok": "not an idle-accel worker: ignored"}
    owner.set_mode(Mode(bool(emergency), bool(requeue_running)))
    return {"ok": "emergency" if emergency else "normal"}


_meters: dict[str, credit.Meter] = {}


@signals.task_prerun.connect
def _start_meter(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id and task is not None:
        queue = str((task.request.delivery_info or {}).get("routing_key") or "")
        _meters[task_id] = credit.Meter(queue)


@signals.task_postrun.connect
def _drop_meter(task_id: str | None = None, **_: Any) -> None:
    _meters.pop(task_id or "", None)


@signals.task_success.connect
def _credit(sender: Any = None, **_: Any) -> None:
    """A task succeeded in this pool process: credit its volunteer, once."""
    request = sender.request
    meter = _meters.get(request.id or "")
    if meter is None or not request.hostname or request.called_directly:
        return
    cpu, gpu = meter.finish()
    try:
        credit.record(sender.app.backend.client, request.hostname, request.id, cpu, gpu,
                      int(sender.app.conf.result_expires or 86_400))
    except Exception as exc:  # credit is bookkeeping: never fail a task over it
        log.warning("credit for %s not recorded: %s", request.id, exc)


class KeepHeldStep(bootsteps.StartStopStep):
    """Consumer step: a lost broker connection does not push held tasks back to their queue.

    When its connection drops, kombu's Redis channel "restores" every message
    it delivered and that is not yet acknowledged: tasks still running in this
    worker's pool go back to the queue and run twice. And in kombu 5.7 that
    restore, on a connection error, can raise ``AttributeError`` (the
    connection is already released) and end the worker ("Unrecoverable
    error"), as the fault suite found on a Redis restart. Held tasks keep
    their leases instead (``worker/lease.py``): each is acknowledged when it
    ends, or goes back to its queue after the visibility timeout if this
    worker is gone for good.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.enabled = str(c.app.conf.broker_url).startswith(("redis://", "rediss://"))
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        c.task_consumer.channel.qos.restore_at_shutdown = False


# -- malformed messages -------------------------------------------------------------------------

#: What kombu raises building a message from an item that is not one of its envelopes.
_ITEM_ERRORS = (ValueError, TypeError, KeyError, AttributeError, binascii.Error)


class MalformedItem(Exception):
    """A queue item that is not a kombu message."""


class _GuardedMessage(kombu_redis.Channel.Message):
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel, **kwargs)
        except _ITEM_ERRORS as exc:  # no properties or delivery tag, bad base64, odd headers
            raise MalformedItem(f"{exc!r} in {str(payload)[:200]!r}") from None


def _drop_malformed_items() -> None:
    """A queue item that is not a kombu message is logged and dropped, not fatal (kombu 5.7).

    kombu parses what BRPOP popped inside the worker's event loop; an item that
    is not JSON or not an envelope raised there and ended the worker
    ("Unrecoverable error"). Popped, the item is in no other list (not even
    ``unacked``): dropping it loses nothing else.
    """
    channel = kombu_redis.Channel
    if getattr(channel, "_idle_accel_guarded", False):
        return
    read = channel._brpop_read

    def _brpop_read(self: Any, **options: Any) -> Any:
        try:
            return read(self, **options)
        except MalformedItem as exc:
            log.error("Refused malformed message (not a kombu message), dropped: %s", exc)
            return True
        except ValueError as exc:  # kombu's loads(): the item is not JSON
            log.error("Refused malformed message (not JSON), dropped: %r", exc)
            return True

    channel.Message = _GuardedMessage
    channel._brpop_read = _brpop_read
    channel._idle_accel_guarded = True


def message_problem(message: Any, limit: int) -> str | None:
    """Why ``message`` cannot be a task message Celery handles, or None to let Celery decide."""
    headers = message.headers
    if not isinstance(headers, dict):
        return f"headers are {type(headers).__name__}, not an object"
    if "task" not in headers:
        return None  # Celery's own "Received and deleted unknown message"
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str):
        return "the task name and id must be text"
    size = len(message.body or b"")
    if size > limit:
        return f"the arguments' message is {size} bytes, over the {limit}-byte message limit"
    if message.content_type != "application/json":
        return None  # Celery refuses it: "Refusing to deserialize untrusted content"
    try:
        body = message.decode()
    except Exception:
        return None  # Celery's own "Can't decode message body"
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
            and isinstance(body[1], dict) and (body[2] is None or isinstance(body[2], dict))):
        return "the body must be [args, kwargs, embed]"
    return None


def _refusing_malformed(handler: Any, consumer: Any) -> Any:
    limit = max_message_bytes(consumer.app)

    def on_task_received(message: Any) -> Any:
        problem = message_problem(message, limit)
        if problem is None:
            return handler(message)
        headers = message.headers if isinstance(message.headers, dict) else {}
        log.error("Refused malformed message %s (task %s): %s",
                  headers.get("id"), headers.get("task"), problem)
        if "message limit" in problem:  # a well-formed task, too big: tell its caller
            name, task_id = headers["task"], headers["id"]
            consumer.app.backend.mark_as_failure(
                task_id, PayloadTooLarge(f"{name}: {problem} (IDLE_ACCEL_MAX_MESSAGE_BYTES): "
                                         "pass a path or URL to the data instead"),
                request=Bunch(id=task_id, name=name, chord=None, errbacks=None,
                              root_id=headers.get("root_id"), reply_to=None,
                              correlation_id=task_id, group=None, parent_id=None,
                              delivery_info={}, ignore_result=False))
        message.reject_log_error(log, consumer.connection_errors)  # out of ``unacked`` too
        return None

    return on_task_received


class RefuseMalformedStep(bootsteps.StartStopStep):
    """Consumer step: a task message Celery cannot read is refused and logged, never fatal.

    Celery assumes a task message has text ``task`` and ``id`` headers and a
    ``[args, kwargs, embed]`` body; without them it ended the worker, or
    restarted its consumer for ever, and the message came back to end the
    next worker. Messages over ``IDLE_ACCEL_MAX_MESSAGE_BYTES`` are refused
    before they are decoded, for every task, with ``PayloadTooLarge`` stored
    for the caller.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        if not getattr(c, "_idle_accel_guarded", False):
            build = c.create_task_handler
            c.create_task_handler = lambda *a, **kw: _refusing_malformed(build(*a, **kw), c)
            c._idle_accel_guarded = True


def _acks_outlive_their_connection() -> None:
    """Let a task that ran through a reconnect be acknowledged on its old channel (kombu 5.7).

    A task delivered before a broker restart ends after the reconnect; its
    acknowledgement goes through the channel it came on, whose connection
    Celery has closed meanwhile. kombu's Redis channel then rebuilds its
    connection pool from that closed connection and raises ``AttributeError``
    ("'NoneType' object has no attribute 'client'"), which ends the worker
    ("Unrecoverable error"): every Redis restart killed every worker that had a
    task running. Here a channel remembers the connection parameters it was
    opened with and reuses them after its connection is gone, so the
    acknowledgement lands (or, with Redis still down, fails as a connection
    error that Celery logs, and the lease sweep hands the task out again).
    """
    channel_cls = kombu_redis.Channel
    if getattr(channel_cls, "_idle_accel_patched", False):
        return
    original = channel_cls._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            saved = self.__dict__.get("_idle_accel_connparams")
            if saved is None:
                raise redis.ConnectionError("the channel's broker connection is closed")
            return dict(saved)
        params = original(self, asynchronous=asynchronous)
        if not asynchronous:
            self._idle_accel_connparams = dict(params)
        return params

    channel_cls._connparams = _connparams
    channel_cls._idle_accel_patched = True


def install_worker_steps(app: Celery) -> None:
    """Every worker of ``app``, plain ``celery worker`` too: leases kept and renewed
    (``worker/lease.py``), acknowledgements through reconnects, malformed messages refused."""
    _acks_outlive_their_connection()
    _drop_malformed_items()
    app.steps["worker"].add(LeaseStep)
    app.steps["consumer"].add(KeepHeldStep)
    app.steps["consumer"].add(RefuseMalformedStep)


def install_gate(app: Celery, owner: Any) -> None:
    """Gate the worker of ``app`` by ``owner`` (a :class:`worker.owner_loop.OwnerLoop`)."""
    setattr(app, OWNER_ATTR, owner)
    app.steps["consumer"].add(GateStep)
    app.steps["worker"].add(OwnerStep)


def close_client(app: Celery) -> None:
    """Close a client app for good, its result listener first.

    Celery unsubscribes each finished result from Redis when it is garbage
    collected; at exit, after a private Redis stopped, that prints a
    traceback. Forget the subscriptions and close the listener while Redis
    still answers.
    """
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None and hasattr(consumer, "subscribed_to"):
        consumer.subscribed_to.clear()
        consumer.stop()
    app.close()
