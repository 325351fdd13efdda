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
  renews the leases of held tasks (``worker/lease.py``: every tag the
  channel holds, rate-limited and ETA tasks too), fenced by the score kombu
  wrote at delivery (``_note_delivery_times``); a copy whose task another
  worker took meanwhile is ended (``end_copy``); :class:`KeepHeldStep`
  keeps them through a lost connection, and acknowledgements land after a
  reconnect (``_acks_outlive_their_connection``).
- :class:`RefuseMalformedStep` and ``_drop_malformed_items``: a message Celery
  or kombu cannot read is logged and refused, never fatal.
- ``_time_limits_count_running_time``: a task's soft and hard time limits
  do not count the time the gate kept it stopped (``worker/suspension.py``).
- Credit signals and the ``idle_accel_fleet_mode`` remote-control command.
"""

from __future__ import annotations

import binascii
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from celery import Celery, bootsteps, signals
from celery.utils.objects import Bunch
from celery.worker import state as worker_state
from celery.worker.control import control_command
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual

from compute import keys, namespace, redis_clients
from compute.errors import PayloadTooLarge
from compute.sdk import max_message_bytes
from compute.verify import HandBack
from worker import credit, lease, scratch, taskprocs
from worker.fleet_mode import Mode
from worker.gate import Held
from worker.lease import LeaseKeeper
from worker.suspension import SuspensionClock, owed

log = logging.getLogger(__name__)

#: Attribute of the app that carries the owner loop into the bootsteps.
OWNER_ATTR = "idle_accel_owner"
#: How long the owner thread waits for the event loop to apply a queue change.
APPLY_TIMEOUT = 2.0
#: Longest lease renewal period of a worker in a volunteer namespace (seconds).
VOLUNTEER_RENEW_INTERVAL = 2.0


def _held_requests() -> list[Any]:
    # ``requests`` maps id -> request for every task the worker holds
    # (reserved, running, scheduled); copying a dict's values is atomic.
    return list(worker_state.requests.values())


def _tag(request: Any) -> str | None:
    message = getattr(request, "message", None)
    tag = getattr(message, "delivery_tag", None)
    return str(tag) if tag is not None else None


def _delivered_tags(consumer: Any) -> list[str]:
    """Tags the consumer's channel delivered and holds unacknowledged (kombu's virtual QoS).

    These include tasks Celery keeps out of ``worker_state.requests``: a
    rate-limited task waiting in its token bucket, for one.
    """
    qos = getattr(getattr(getattr(consumer, "task_consumer", None), "channel", None), "qos", None)
    delivered = getattr(qos, "_delivered", None)
    if delivered is None:
        return []
    for _ in range(3):  # the event loop may change them while this thread reads
        try:
            return [str(tag) for tag in list(delivered) if tag not in set(qos._dirty)]
        except RuntimeError:
            continue
    return []


def held_tags(consumer: Any = None) -> list[str]:
    """Every delivery tag the worker holds: running, reserved, scheduled, rate-limited."""
    tags = [tag for tag in map(_tag, (request for request in _held_requests()
                                      if not request.acknowledged)) if tag]
    return list(dict.fromkeys([*tags, *_delivered_tags(consumer)]))


def end_copy(tag: str) -> None:
    """End this worker's copy of the task delivered as ``tag``: its lease is another's now.

    Nothing is said to the broker (an acknowledgement or a requeue would remove
    or duplicate the new holder's delivery, which has the same tag): the
    request is marked acknowledged and revoked here only, its prefetch slot is
    freed, and its pool process, if it started, is ended.
    """
    for request in _held_requests():
        if _tag(request) != tag:
            continue
        request.acknowledged = True
        request._already_revoked = True
        try:
            kombu_virtual.QoS.ack(request.message.channel.qos, request.message.delivery_tag)
        except Exception as exc:  # the channel is gone: nothing held there any more
            log.debug("prefetch slot of %s not freed: %s", tag, exc)
        if request.worker_pid:
            taskprocs.kill_trees([request.worker_pid])
        log.warning("ended this worker's copy of %s[%s]: another worker has it now",
                    request.name, request.id)
        return
    log.warning("delivery %s is another worker's now; it had not started here", tag)


def _note_delivery_times() -> None:
    """Remember when this process's channel delivered each tag (kombu 5.7's Redis QoS).

    kombu scores a delivery in ``unacked_index`` with its own clock; the
    window around that call lets the lease keeper's first renewal tell this
    worker's delivery from a later one to another worker (``worker/lease.py``).
    """
    qos_cls = kombu_redis.QoS
    if getattr(qos_cls, "_idle_accel_noted", False):
        return
    append = qos_cls.append

    def noted(self: Any, message: Any, delivery_tag: Any) -> None:
        before = time.time()
        append(self, message, delivery_tag)
        lease.DELIVERED[str(delivery_tag)] = (before, time.time())

    qos_cls.append = noted
    qos_cls._idle_accel_noted = True


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
            # Made the app's way first (``task_create_missing_queue_type``: quorum queues
            # stay quorum); given only a name, Celery's add_task_queue makes a classic one.
            consumer.app.amqp.queues[name]  # creates it when missing
            consumer.add_task_queue(name)


def _job_of(request: Any) -> str | None:
    """The job a held task is a part of: its chord's callback id (``compute.jobs``)."""
    try:
        chord = request.chord
        task_id = (chord or {}).get("options", {}).get("task_id")
    except Exception:  # an odd message: no job shown
        return None
    return str(task_id) if task_id else None


class CeleryActuator:
    """The gate's hands on a Celery consumer (see :class:`worker.gate.Actuator`)."""

    def __init__(self) -> None:
        self.consumer: Any = None
        self.loop_thread: int | None = None  # the consumer's event loop thread

    def set_queues(self, names: Sequence[str]) -> bool:
        consumer = self.consumer
        if consumer is None:
            return False  # no consumer yet, or reconnecting: GateStep.start applies it
        if threading.get_ident() == self.loop_thread:
            # Called on the loop itself (a remote-control command such as the emergency
            # switch): waiting for call_soon would block the loop until the timeout.
            sync_queues(consumer, names)
            return True
        done = threading.Event()

        def apply() -> None:
            try:
                sync_queues(consumer, names)
            finally:
                done.set()

        consumer.call_soon(apply)
        return done.wait(APPLY_TIMEOUT)

    def resize_pool(self, size: int) -> int | None:
        """Grow or shrink the prefork pool toward ``size`` processes, as Celery's
        ``pool_grow`` / ``pool_shrink`` commands do; the size it has now (None: no consumer).

        Celery shrinks only idle processes: the rest goes on a later call.
        """
        consumer = self.consumer
        if consumer is None:
            return None
        done: list[int] = []
        finished = threading.Event()

        def apply() -> None:
            try:
                pool = consumer.pool
                current = pool.num_processes
                if size > current:
                    pool.grow(size - current)
                    consumer._update_prefetch_count(size - current)
                while pool.num_processes > size:
                    try:
                        pool.shrink(1)
                    except ValueError:  # every process left is busy
                        break
                    consumer._update_prefetch_count(-1)
                done.append(pool.num_processes)
            finally:
                finished.set()

        if threading.get_ident() == self.loop_thread:
            apply()
        else:
            consumer.call_soon(apply)
            finished.wait(APPLY_TIMEOUT)
        return done[0] if done else None

    def held(self) -> list[Held]:
        return [Held(task_id=request.id, name=request.name,
                     worker_pid=request.worker_pid, delivery_tag=_tag(request),
                     queue=str((request.delivery_info or {}).get("routing_key") or ""),
                     started=request.time_start, job=_job_of(request))
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
        self.owner.gate.actuator.loop_thread = threading.get_ident()
        self.owner.gate.actuator.consumer = c
        self.owner.nudge()  # the status report says what is consumed now, not at the next tick

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
        self.enabled = redis_clients.scheme(str(self.url)) in redis_clients.REDIS_SCHEMES
        options = conf.broker_transport_options or {}
        self.options = options  # Sentinel's master_name and sentinel_kwargs, when it is one
        self.interval = float(options.get("visibility_timeout", 3600)) / 3
        self.index = str(options.get("global_keyprefix") or "") + keys.UNACKED_INDEX
        if options.get("global_keyprefix"):
            # An enrolled volunteer: the coordinator reissues a task whose lease is
            # older than its --lease-timeout (8 s): renew well inside that.
            self.interval = min(self.interval, VOLUNTEER_RENEW_INTERVAL)
        self.in_namespace = bool(options.get("global_keyprefix"))
        self.keeper: LeaseKeeper | None = None
        super().__init__(w, **kwargs)

    def start(self, w: Any) -> None:
        client = redis_clients.connect(self.url, self.options)

        def on_lost(tag: str, _why: str) -> None:
            consumer = getattr(w, "consumer", None)
            if consumer is not None:
                consumer.call_soon(end_copy, tag)  # requests belong to the event loop
            else:
                end_copy(tag)

        # In a volunteer's namespace only the coordinator removes a lease still
        # held: it took the task back to reissue it, so the copy here ends too.
        self.keeper = LeaseKeeper(lambda: client, lambda: held_tags(getattr(w, "consumer", None)),
                                  self.interval, index=self.index, on_lost=on_lost,
                                  gone_is_lost=self.in_namespace)
        self.keeper.start()

    def stop(self, w: Any) -> None:
        if self.keeper is not None:
            self.keeper.stop()

    def info(self, w: Any) -> dict[str, Any]:
        keeper = self.keeper
        return {"leases": {"interval": round(self.interval, 3),
                           "renewed": keeper.renewed if keeper else 0,
                           "lost": list(keeper.lost) if keeper else [],
                           "ended": list(keeper.ended) if keeper else []}}


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
                      int(sender.app.conf.result_expires or 86_400),
                      prefix=namespace.of(sender.app))
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
            if _not_here and _handed_on(message, consumer):
                return None
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


#: The worker's reply to RabbitMQ closing a channel for a task held past consumer_timeout.
CONSUMER_TIMEOUT_HELP = (
    "RabbitMQ closed the channel: a task was held (running or stopped by its owner) longer "
    "than the server's consumer_timeout. The broker requeued it and this worker ended its "
    "copy; a task longer than the timeout never finishes. Raise consumer_timeout above the "
    "longest task plus --preempt-after (deploy/rabbitmq/rabbitmq.conf; RabbitMQ 3.12+ also "
    "takes a per-queue consumer-timeout policy)")


def _explain_consumer_timeouts() -> None:
    """Say what to change when RabbitMQ's consumer_timeout closes the channel (Celery 5.7).

    With ``broker_channel_error_retry`` the worker reconnects instead of exiting
    ("Unrecoverable error"), and with ``worker_cancel_long_running_tasks_on_connection_loss``
    it ends its copy of the requeued task; this names the setting behind it.
    """
    from celery.worker.consumer.consumer import Consumer

    if getattr(Consumer, "_idle_accel_explained", False):
        return
    react = Consumer.on_connection_error_after_connected

    def on_connection_error_after_connected(self: Any, exc: Exception) -> None:
        if "delivery acknowledgement" in str(exc) and "timed out" in str(exc):
            log.error(CONSUMER_TIMEOUT_HELP)
        react(self, exc)

    Consumer.on_connection_error_after_connected = on_connection_error_after_connected
    Consumer._idle_accel_explained = True


#: The live consumer of this worker process (set by :class:`HandBackStep`).
_consumer: list[Any] = [None]


class HandBackStep(bootsteps.StartStopStep):
    """Consumer step: know the live consumer, for hand-backs (:func:`_hand_backs_wait_aside`)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        _consumer[0] = c

    def stop(self, c: Any) -> None:
        _consumer[0] = None

    shutdown = stop


def _release(request: Any, consumer: Any, widened: bool) -> None:
    """Give a handed-back message back to its queue's tail (Redis: requeue; AMQP: re-publish)."""
    try:
        _to_tail(request.message, request.task.app, request.reject, request.acknowledge)
    except Exception as error:  # the connection is gone: the broker hands it out again
        log.warning("hand-back of %s[%s] not done (%s): the broker requeues it",
                    request.name, request.id, error)
    finally:
        if widened:
            consumer.qos.decrement_eventually()


def _to_tail(message: Any, app: Any, reject: Callable[..., Any],
             acknowledge: Callable[[], Any]) -> None:
    """Put ``message`` at its queue's tail: a Redis requeue, or on AMQP the very same
    message re-published and the delivery acknowledged."""
    if isinstance(message.channel, kombu_virtual.Channel):
        reject(requeue=True)  # kombu's Redis requeue is an LPUSH: the tail
        return
    info, properties = message.delivery_info or {}, message.properties or {}
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body, exchange=info.get("exchange", ""),
            routing_key=info.get("routing_key", ""), headers=message.headers,
            content_type=message.content_type, content_encoding=message.content_encoding,
            correlation_id=properties.get("correlation_id"),
            reply_to=properties.get("reply_to"), priority=properties.get("priority"),
            retry=True)
    acknowledge()


#: Tasks this worker ended for a volunteer's cap: task id -> (reason, refused until).
_not_here: dict[str, tuple[str, float]] = {}
#: How long a task ended here for a cap is handed on rather than run here again, and how
#: long it waits aside before it goes back (other workers take it meanwhile).
NOT_HERE_FOR = 3600.0
NOT_HERE_PAUSE = 5.0


def not_here_again(task_id: str, reason: str) -> None:
    """The caps watcher ended ``task_id`` here: if this worker receives it again within
    ``NOT_HERE_FOR`` seconds, or until the volunteer changes a cap, it hands it on to
    another worker instead of running it (a task that needs more than this volunteer
    allows would otherwise be taken, grow and be ended here for ever)."""
    now = time.monotonic()
    for old in [key for key, (_, until) in _not_here.items() if until < now]:
        del _not_here[old]
    _not_here[task_id] = (reason, now + NOT_HERE_FOR)


def caps_changed() -> None:
    """The volunteer changed a cap: what was ended here may fit now."""
    _not_here.clear()


def _handed_on(message: Any, consumer: Any) -> bool:
    """Hand ``message`` on if its task was ended here for a cap; True if it was."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    found = _not_here.get(str(headers.get("id")))
    if found is None or found[1] < time.monotonic():
        return False
    log.warning("handing %s[%s] on to another worker: this volunteer's cap ended it here "
                "before (%s)", headers.get("task"), headers.get("id"), found[0])

    def release() -> None:
        try:
            _to_tail(message, consumer.app, message.reject, message.ack)
        except Exception as error:  # the connection is gone: the broker hands it out again
            log.warning("hand-on of %s not done (%s): the broker requeues it",
                        headers.get("id"), error)

    consumer.timer.call_after(NOT_HERE_PAUSE, release)
    return True


def _hand_backs_wait_aside() -> None:
    """A handed-back message waits aside, then goes to the tail of its queue (Celery 5.7).

    A worker that must not run a message (this machine already ran another
    replica of a verified task: :class:`compute.verify.HandBack`) used to
    sleep in its pool process and ``Reject(requeue=True)``. Two machines each
    holding the other's replica then blocked their only slots, and on
    RabbitMQ, which requeues at the head, each took its own back for ever.
    Here the pool process returns at once; the main process keeps the message
    unacknowledged (its lease renewed) for the pause, with the prefetch
    window opened by one as for an ETA task, so the worker takes other work
    meanwhile; then the message goes to the tail: a Redis requeue, or on AMQP
    the very same message (body and headers untouched, so a signature still
    holds) re-published to its exchange and routing key and the delivery
    acknowledged. A crash between the two leaves a duplicate replica, which
    the verification record absorbs (a replica already done returns its
    stored result).
    """
    from celery.worker.request import Request

    if getattr(Request, "_idle_accel_aside", False):
        return
    on_failure = Request.on_failure

    def _on_failure(self: Any, exc_info: Any, send_failed_event: bool = True,
                    return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        consumer = _consumer[0]
        if not isinstance(exc, HandBack) or consumer is None:
            return on_failure(self, exc_info, send_failed_event, return_ok)
        worker_state.task_ready(self)
        # AMQP: open the prefetch window so the worker takes other work meanwhile (two
        # machines holding each other's replica livelocked). Redis keeps the slot taken,
        # as before: an enrolled volunteer's coordinator sizes its inbox by its slots.
        widen = not isinstance(self.message.channel, kombu_virtual.Channel)
        if widen:
            consumer.qos.increment_eventually()
        consumer.timer.call_after(max(0.0, float(exc.pause)), _release, (self, consumer, widen))
        return None

    Request.on_failure = _on_failure
    Request._idle_accel_aside = True


def _no_native_delayed_delivery() -> None:
    """Quorum queues: leave out Celery's native delayed delivery (``DelayedDelivery``).

    It declares 28 more quorum queues (each a Raft group on every node) and binds
    only the queues a worker knew at start and only through topic exchanges; the
    project's queues are direct and made on demand (tiers, regions). An ETA task
    is held by the worker that received it, as on classic queues.
    """
    from celery.worker.consumer.delayed_delivery import DelayedDelivery

    DelayedDelivery.include_if = lambda self, c: False


def install_worker_steps(app: Celery) -> None:
    """Every worker of ``app``, plain ``celery worker`` too: leases kept and renewed
    (``worker/lease.py``), acknowledgements through reconnects, malformed messages refused."""
    _acks_outlive_their_connection()
    _drop_malformed_items()
    _note_delivery_times()
    _explain_consumer_timeouts()
    _hand_backs_wait_aside()
    _no_native_delayed_delivery()
    app.steps["worker"].add(LeaseStep)
    app.steps["consumer"].add(KeepHeldStep)
    app.steps["consumer"].add(RefuseMalformedStep)
    app.steps["consumer"].add(HandBackStep)


def _time_limits_count_running_time(clock: SuspensionClock) -> None:
    """Soft and hard time limits count only the time a task could run (Celery 5.7's AsynPool).

    The prefork pool arms a timer per task when it starts; a task stopped by
    the gate for longer than its limit was killed (``TimeLimitExceeded``, a
    FAILURE) or interrupted on resume, though the owner, not the task, took
    the time. Here each timer notes the pool's stopped-seconds clock when it
    is armed; when it fires it re-arms itself for the stopped time since,
    and fires for real only once the task has run for its whole limit.
    """
    from celery.concurrency import asynpool

    pool_cls = asynpool.AsynPool
    pool_cls._idle_accel_suspension = clock
    if getattr(pool_cls, "_idle_accel_limits", False):
        return
    create, on_soft, on_hard = (pool_cls._create_timelimit_handlers,
                                pool_cls._on_soft_timeout, pool_cls._on_hard_timeout)

    def _create_timelimit_handlers(self: Any, hub: Any) -> None:
        create(self, hub)
        self._idle_accel_hub = hub
        marks = self.__dict__.setdefault("_idle_accel_marks", {})  # job -> stopped-seconds
        arm, cancel = self.on_timeout_set, self.on_timeout_cancel

        def on_timeout_set(result: Any, soft: float | None, hard: float | None) -> None:
            marks[result._job] = self._idle_accel_suspension.read()[0]
            arm(result, soft, hard)

        def on_timeout_cancel(result: Any) -> None:
            marks.pop(result._job, None)
            cancel(result)

        self.on_timeout_set, self.on_timeout_cancel = on_timeout_set, on_timeout_cancel

    def _postponed(self: Any, job: int, fire: Any, *args: Any) -> bool:
        marks = self.__dict__.get("_idle_accel_marks", {})
        if job not in marks or job not in self._cache:
            return False
        more, marks[job] = owed(self._idle_accel_suspension, marks[job])
        if more <= 0:
            return False
        self._tref_for_id[job] = self._idle_accel_hub.call_later(more, fire, self, job, *args)
        return True

    def _on_soft_timeout(self: Any, job: int, soft: Any, hard: Any, hub: Any) -> None:
        if not _postponed(self, job, _on_soft_timeout, soft, hard, hub):
            on_soft(self, job, soft, hard, hub)

    def _on_hard_timeout(self: Any, job: int) -> None:
        if not _postponed(self, job, _on_hard_timeout):
            self.__dict__.get("_idle_accel_marks", {}).pop(job, None)
            on_hard(self, job)

    pool_cls._create_timelimit_handlers = _create_timelimit_handlers
    pool_cls._on_soft_timeout = _on_soft_timeout
    pool_cls._on_hard_timeout = _on_hard_timeout
    pool_cls._idle_accel_limits = True


def _enter_scratch(task_id: str | None = None, **_: Any) -> None:
    root = os.environ.get(scratch.ENV)
    if root and task_id:
        scratch.enter(Path(root), task_id)


def _leave_scratch(task_id: str | None = None, **_: Any) -> None:
    root = os.environ.get(scratch.ENV)
    if root and task_id:
        scratch.leave(Path(root), task_id)


def install_scratch(root: Path) -> None:
    """Each task's temporary files in a folder of its own under ``root`` (``worker/scratch.py``):
    made in the pool process before the task runs, removed after it."""
    os.environ[scratch.ENV] = str(scratch.prepare(root))  # the pool processes inherit it
    signals.task_prerun.connect(_enter_scratch, weak=False)
    signals.task_postrun.connect(_leave_scratch, weak=False)


def install_gate(app: Celery, owner: Any) -> None:
    """Gate the worker of ``app`` by ``owner`` (a :class:`worker.owner_loop.OwnerLoop`)."""
    setattr(app, OWNER_ATTR, owner)
    _time_limits_count_running_time(owner.gate.suspension)
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
