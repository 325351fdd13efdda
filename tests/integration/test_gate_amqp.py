"""The idle-gated worker on RabbitMQ (a vhost of its own per test), results on Redis.

The gate's promises hold on both brokers: a busy owner's worker takes
nothing; a running task is stopped in place and finishes after; a preempted
task goes back to its queue and never fails; time limits count only running
time; a killed, frozen or disconnected worker's task is run once elsewhere;
a channel closed by RabbitMQ's ``consumer_timeout`` is a reconnect, not an exit;
the emergency switch and region pinning route as on Redis.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection

from compute import verify
from compute.app import create_app
from compute.settings import Settings
from worker.local.rabbit_vhost import Vhost, server_setting

from . import test_malformed_messages as malformed
from .gating import Owner, fleet, received
from .test_emergency import switch
from .waiting import wait_for, wait_for_state

TIMEOUT = 60


@pytest.fixture
def broker_env(broker, rabbit: Vhost) -> dict[str, str]:
    """Workers and the CLI on RabbitMQ; results, status and leases' peers on the test Redis."""
    return {"CELERY_BROKER_URL": rabbit.url, "CELERY_RESULT_BACKEND": broker.url(0)}


@pytest.fixture
def app(broker, rabbit: Vhost) -> Iterator[Celery]:
    client_app = create_app(Settings.load(broker_url=rabbit.url, result_backend=broker.url(0)))
    yield client_app
    client_app.close()


@pytest.fixture
def owner(tmp_path) -> Owner:
    return Owner(tmp_path / "owner-a")


def gated(workers, name: str, owner: Owner, *args: str, preempt_after: float = 300):
    return workers(name, "--concurrency", "1", "--sensor", owner.flag, "--sensor-max-age",
                   "0", "--idle-after", "0.3", "--preempt-after", str(preempt_after), *args)


def test_a_busy_owner_takes_nothing_and_a_stopped_task_finishes_after(
        app, workers, owner, rabbit, broker):
    worker = gated(workers, "amqp-a", owner)
    waiting = app.signature("compute.diag.noop").delay()
    time.sleep(2)
    assert waiting.state == "PENDING" and rabbit.depth("cpu") == 1

    owner.idle()
    assert waiting.get(timeout=TIMEOUT) == {"hostname": worker.node}
    burn = app.signature("compute.diag.burn", (1.5,)).set(time_limit=4).delay()
    wait_for_state(burn, "STARTED")
    owner.busy()
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "busy", what="busy reported")
    time.sleep(5)  # stopped past its time limit: does not count
    owner.idle()
    value = burn.get(timeout=TIMEOUT)
    assert burn.state == "SUCCESS" and value["elapsed"] >= 5


def test_a_preempted_task_is_requeued_never_failed_and_runs_elsewhere(
        app, workers, owner, tmp_path):
    owner.idle()
    first = gated(workers, "amqp-a", owner, preempt_after=0.5)
    result = app.signature("compute.diag.burn", (2.0,)).delay()
    wait_for_state(result, "STARTED")
    owner.busy()
    wait_for(lambda: "ended, back to the queue" in first.log_text(), timeout=TIMEOUT,
             what="preemption")
    assert result.state != "FAILURE"
    second = gated(workers, "amqp-b", Owner.away(tmp_path / "owner-b"))

    assert result.get(timeout=TIMEOUT)["hostname"] == second.node
    assert result.state == "SUCCESS" and f"[{result.id}] succeeded" not in first.log_text()


def test_a_killed_worker_has_its_task_run_once_elsewhere(app, workers, owner, tmp_path):
    owner.idle()
    doomed = gated(workers, "amqp-a", owner)
    result = app.signature("compute.diag.sleep", (3,)).delay()
    wait_for_state(result, "STARTED")
    survivor = gated(workers, "amqp-b", Owner.away(tmp_path / "owner-b"))
    doomed.kill()

    assert result.get(timeout=TIMEOUT)["hostname"] == survivor.node
    assert received([survivor], result.id) == 1


def test_a_connection_closed_by_the_broker_leaves_one_live_copy(app, workers, rabbit):
    worker = workers("amqp-a", "--concurrency", "1")
    result = app.signature("compute.diag.sleep", (6,)).delay()
    wait_for_state(result, "STARTED")

    assert rabbit.close_connections() >= 1  # RabbitMQ requeues the task at once

    assert result.get(timeout=TIMEOUT)["hostname"] == worker.node
    time.sleep(2)
    text = worker.log_text()
    assert text.count(f"[{result.id}] succeeded") == 1  # two copies ran (and succeeded) before
    assert "Terminating it instead" in text
    assert worker.alive and rabbit.depth("cpu") == 0


def test_rate_limited_tasks_waiting_for_their_token_run_once_on_amqp(app, workers, rabbit):
    """A message waiting in Celery's token bucket is unacknowledged on RabbitMQ, as a
    running one is: it stays delivered (no redelivery, no second copy) until its turn."""
    worker = workers("amqp-rate", "--concurrency", "1")
    replies = app.control.rate_limit("compute.diag.noop", "6/m", destination=[worker.node],
                                     reply=True, timeout=5)
    assert replies and "ok" in replies[0][worker.node]
    sent = [app.signature("compute.diag.noop").delay() for _ in range(3)]

    # At least one waits for its token while delivered and unacknowledged (Celery raises the
    # prefetch for it; the third may come only once the second ran).
    wait_for(lambda: rabbit.depth("cpu") <= 1, what="two delivered to the worker")
    for result in sent:  # one token every 10 s: each waits up to 10 s, unacknowledged
        assert result.get(timeout=TIMEOUT) == {"hostname": worker.node}
    assert [received([worker], result.id) for result in sent] == [1, 1, 1]
    # The pool logs "succeeded" just after it stored the result: give the last line time.
    lines = wait_for(lambda: (count := worker.log_text().count("compute.diag.noop[")) >= 6
                     and count, what="every task's 'succeeded' line")
    assert lines == 6  # received + succeeded, each once
    assert worker.alive and rabbit.depth("cpu") == 0


def test_a_worker_frozen_past_the_heartbeat_ends_its_copy_and_the_task_runs_once(
        app, workers, tmp_path):
    env = {"IDLE_ACCEL_VISIBILITY_TIMEOUT": "6"}  # heartbeat 5 s
    frozen = workers("amqp-a", "--concurrency", "1", env=env)
    result = app.signature("compute.diag.sleep", (25,)).delay()
    wait_for_state(result, "STARTED")
    other = workers("amqp-b", "--concurrency", "1", env=env)

    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: received([other], result.id) == 1, timeout=TIMEOUT,
                 what="the task redelivered to the other worker")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    assert result.get(timeout=TIMEOUT)["hostname"] == other.node
    wait_for(lambda: "Terminating it instead" in frozen.log_text(), timeout=20,
             what="the thawed worker ending its copy")
    assert f"[{result.id}] succeeded" not in frozen.log_text()
    assert app.control.ping(destination=[frozen.node], timeout=5)


def test_the_consumer_timeout_is_a_reconnect_not_an_exit(app, workers, rabbit):
    with server_setting("consumer_timeout", 2000), server_setting("channel_tick_interval", 1000):
        worker = workers("amqp-a", "--concurrency", "1")
        result = app.signature("compute.diag.sleep", (3,)).delay()
        wait_for(lambda: "delivery acknowledgement on channel" in worker.log_text(),
                 timeout=TIMEOUT, what="RabbitMQ closing the channel")
    assert worker.alive
    assert result.get(timeout=TIMEOUT)["hostname"] == worker.node  # once the timeout is back
    assert "Unrecoverable error" not in worker.log_text()
    assert "consumer_timeout" in worker.log_text()  # the log says what to raise


def test_the_emergency_switch_and_region_pinning_on_amqp(app, workers, broker_env):
    pinned_worker = workers("amqp-eu", "--concurrency", "1", "--region", "eu-west")
    plain = workers("amqp-any", "--concurrency", "1")
    pinned = app.signature("compute.diag.noop").set(queue="cpu@eu-west")
    assert all(pinned.delay().get(timeout=TIMEOUT)["hostname"] == pinned_worker.node
               for _ in range(5))

    done = switch(broker_env, "on")
    assert done.returncode == 0 and "2 of 2 workers switched" in done.stdout, done.stdout
    urgent = app.signature("compute.diag.noop").apply_async(queue="emergency")
    ordinary = app.signature("compute.diag.noop").delay()
    assert urgent.get(timeout=TIMEOUT)["hostname"] in (pinned_worker.node, plain.node)
    time.sleep(1)
    assert ordinary.state == "PENDING"
    assert switch(broker_env, "off").returncode == 0
    assert ordinary.get(timeout=TIMEOUT)["hostname"] in (pinned_worker.node, plain.node)


def amqp_parts(item: str) -> dict | None:
    """The Redis list item of a forged case as an AMQP message, or None if it has no AMQP
    equivalent (a malformed kombu Redis envelope: not JSON, body not base64)."""
    try:
        envelope = json.loads(item)
        body = base64.b64decode(envelope["body"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return {"body": body, "headers": envelope["headers"],
            "content_type": envelope["content-type"],
            "content_encoding": envelope["content-encoding"]}


#: The forged cases that exist on AMQP (not the malformed Redis envelopes).
AMQP_CASES = {name: case for name, case in malformed.CASES.items()
              if amqp_parts(case.item(Path("/nonexistent"))) is not None}


@pytest.mark.parametrize("case", list(AMQP_CASES.values()), ids=list(AMQP_CASES))
def test_a_malformed_message_is_refused_on_amqp_too(app, workers, rabbit, tmp_path, case):
    parts = amqp_parts(case.item(tmp_path))
    worker = workers("raw-amqp", "--concurrency", "1", "--queues", "cpu",
                     env={"IDLE_ACCEL_MAX_MESSAGE_BYTES": str(malformed.LIMIT)})
    noop = app.signature("compute.diag.noop")
    before = noop.delay()
    assert before.get(timeout=TIMEOUT) == {"hostname": worker.node}
    with Connection(rabbit.url) as connection:
        connection.Producer().publish(parts.pop("body"), exchange="", routing_key="cpu",
                                      **parts)
    after = noop.delay()

    assert after.get(timeout=TIMEOUT) == {"hostname": worker.node}
    assert worker.alive
    assert case.logged.lower() in worker.log_text().lower()
    assert not (tmp_path / "pickle-was-loaded").exists()
    if case.stored:
        forged = app.AsyncResult(case.task_id)
        assert forged.state == "FAILURE" and type(forged.result).__name__ == case.stored
    wait_for(lambda: rabbit.depth("cpu") == 0, what="the forged message gone from the queue")


def test_verified_results_on_amqp_come_from_distinct_machines(app, workers, broker):
    first = workers("amqp-va", "--concurrency", "1", "--host-id", "machine-a")
    second = workers("amqp-vb", "--concurrency", "1", "--host-id", "machine-b")
    sent = [app.signature("compute.diag.checksum", (f"text {i}", 100)).apply_async(verify=2)
            for i in range(4)]

    values = [result.get(timeout=TIMEOUT) for result in sent]

    assert len({value["sha256"] for value in values}) == 4
    with broker.client() as client:
        for result in sent:
            report = verify.report(client, result.id)
            assert sorted(r["host"] for r in report["replicas"]) == ["machine-a", "machine-b"]
            assert report["verdict"]["agreed"] is True
    assert first.alive and second.alive
