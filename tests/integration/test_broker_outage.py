"""A broker outage in the middle of a task: the worker lives, the task ends once, nothing leaks."""

from __future__ import annotations

from .gating import received
from .waiting import wait_for, wait_for_state

TIMEOUT = 60


def test_a_task_running_through_a_broker_restart_is_acknowledged_and_the_worker_lives(
        app, workers, broker):
    worker = workers("outage-a", "--concurrency", "1")
    result = app.signature("compute.diag.sleep", (3,)).delay()
    wait_for_state(result, "STARTED")

    broker.restart()  # the task ends, and is acknowledged, after the reconnect

    assert result.get(timeout=TIMEOUT)["hostname"] == worker.node
    after = app.signature("compute.diag.noop").delay()
    assert after.get(timeout=TIMEOUT)["hostname"] == worker.node
    assert worker.alive and "Unrecoverable error" not in worker.log_text()
    with broker.client() as client:
        wait_for(lambda: client.hlen("unacked") == 0, timeout=10, what="acknowledged")
    assert received([worker], result.id) == 1
