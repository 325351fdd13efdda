"""Diagnostic tasks round-trip through a real Redis to real `idle-accel worker`s."""

from __future__ import annotations

import math
import os

import pytest

from compute.diag import MAX_SECONDS

from .waiting import wait_for, wait_for_state

TIMEOUT = 30


def test_each_diag_task_returns_the_node_name_of_its_worker(app, workers):
    worker = workers("diag-a", "--concurrency", "1")

    noop = app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT)
    slept = app.signature("compute.diag.sleep", (0.3,)).delay().get(timeout=TIMEOUT)
    burned = app.signature("compute.diag.burn", (0.3,)).delay().get(timeout=TIMEOUT)

    assert noop == {"hostname": worker.node}
    assert slept["hostname"] == worker.node
    assert slept["elapsed"] >= 0.3
    assert burned["hostname"] == worker.node
    assert burned["cpu_seconds"] >= 0.3
    assert burned["spins"] > 0


def test_two_workers_both_serve_the_cpu_queue(app, workers):
    nodes = {workers(name, "--concurrency", "1").node for name in ("diag-a", "diag-b")}

    results = [app.signature("compute.diag.sleep", (0.2,)).delay() for _ in range(8)]
    ran_on = {result.get(timeout=TIMEOUT)["hostname"] for result in results}

    assert ran_on == nodes


BAD_SECONDS = ["ten", None, -1, -0.001, math.nan, math.inf, -math.inf, MAX_SECONDS + 1, 1e300,
               True, [1], {"s": 1}]


@pytest.mark.parametrize("task", ["compute.diag.sleep", "compute.diag.burn"])
def test_bad_arguments_fail_with_a_clear_message_and_the_worker_keeps_serving(
        app, workers, task):
    worker = workers("diag-a", "--concurrency", "1")

    results = [(value, app.send_task(task, args=[value])) for value in BAD_SECONDS]
    wrong_count = app.send_task(task, args=[1, 2, 3])
    after = app.signature("compute.diag.noop").delay()

    for value, result in results:
        result.get(timeout=TIMEOUT, propagate=False)
        message = str(result.result)
        assert result.state == "FAILURE", value
        assert type(result.result).__name__ == "InvalidArgument", value
        assert f"{task}: argument 'seconds' must be a number of seconds from 0 to 600" in message
        assert "got " in message
    wrong_count.get(timeout=TIMEOUT, propagate=False)
    assert wrong_count.state == "FAILURE"
    assert "positional argument" in str(wrong_count.result)
    assert after.get(timeout=TIMEOUT) == {"hostname": worker.node}
    assert worker.alive


def test_a_pickled_message_is_refused_logged_and_never_loaded(app, workers, broker, tmp_path):
    worker = workers("diag-a", "--concurrency", "1")
    marker = tmp_path / "pickle-was-loaded"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with app.connection_for_write() as connection:
        producer = connection.Producer(serializer="pickle")
        producer.publish(
            ((Payload(),), {}, {"callbacks": None, "errbacks": None, "chain": None}),
            exchange="cpu", routing_key="cpu",
            headers={"lang": "py", "task": "compute.diag.noop", "id": "evil-1",
                     "root_id": "evil-1", "parent_id": None, "group": None, "retries": 0},
        )
    after = app.signature("compute.diag.noop").delay()

    assert after.get(timeout=TIMEOUT) == {"hostname": worker.node}
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log_text()
    assert not marker.exists()
    assert worker.alive
    with broker.client() as client:
        assert client.llen("cpu") == 0
        # acks_late: the ack lands just after the result is stored
        wait_for(lambda: client.hlen("unacked") == 0, what="unacked emptied")
    assert app.AsyncResult("evil-1").state == "PENDING"  # never ran, never stored


def test_a_worker_holds_no_more_tasks_than_it_runs(app, workers, broker):
    workers("diag-a", "--concurrency", "1")

    running = app.signature("compute.diag.sleep", (1.5,)).delay()
    waiting = [app.signature("compute.diag.noop").delay() for _ in range(3)]
    wait_for_state(running, "STARTED")

    with broker.client() as client:
        assert client.llen("cpu") == 3
    assert all(result.state == "PENDING" for result in waiting)
    assert [result.get(timeout=TIMEOUT)["hostname"] for result in waiting]


def test_sigterm_lets_the_running_sleep_finish_then_exits(app, workers, broker):
    worker = workers("diag-a", "--concurrency", "1")

    running = app.signature("compute.diag.sleep", (2,)).delay()
    queued = app.signature("compute.diag.noop").delay()
    wait_for_state(running, "STARTED")
    worker.signal(15)

    assert worker.wait(timeout=TIMEOUT) == 0
    assert running.state == "SUCCESS"
    assert running.result["elapsed"] >= 2
    assert queued.state == "PENDING"  # not taken during shutdown, and not lost:
    with broker.client() as client:
        assert client.llen("cpu") == 1



def test_a_worker_takes_only_its_configured_queues(app, workers, broker):
    worker = workers("urgent", "--queues", "emergency", "--concurrency", "1")

    normal = app.signature("compute.diag.noop").delay()
    urgent = app.signature("compute.diag.noop").apply_async(queue="emergency")

    assert urgent.get(timeout=TIMEOUT) == {"hostname": worker.node}
    active = app.control.inspect(destination=[worker.node], timeout=2).active_queues()
    assert [queue["name"] for queue in active[worker.node]] == ["emergency"]
    assert normal.state == "PENDING"
    with broker.client() as client:
        assert client.llen("cpu") == 1
