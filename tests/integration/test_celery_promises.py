"""Celery's own promises on the idle-gated worker (real Redis, real workers).

A task stopped in place while its owner works keeps every promise Celery
makes of it: its time limits count only the time it could run, a worker
frozen past its lease ends its copy once another worker has the task, and a
rate-limited task waiting for its token keeps its lease.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .gating import Owner, fleet, received
from .waiting import wait_for, wait_for_state

TIMEOUT = 60


@pytest.fixture
def owner(tmp_path) -> Owner:
    return Owner(tmp_path / "owner-a")


def gated(workers, name: str, owner: Owner, *args: str, env: dict[str, str] | None = None):
    return workers(name, "--sensor", owner.flag, "--sensor-max-age", "0",
                   "--idle-after", "0.3", "--preempt-after", "300", *args, env=env)


def test_time_limits_count_only_the_time_a_task_could_run(app, workers, owner, broker):
    owner.idle()
    worker = gated(workers, "limits-a", owner, "--concurrency", "2")
    # 1 s of CPU each within 6 s of running time: room for a busy CI machine's 2 cores.
    hard = app.signature("compute.diag.burn", (1.0,)).set(time_limit=6).delay()
    soft = app.signature("compute.diag.burn", (1.0,)).set(soft_time_limit=6).delay()
    wait_for_state(hard, "STARTED")
    wait_for_state(soft, "STARTED")

    owner.busy()  # the owner works for 8 s: past both limits, while the tasks are stopped
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "busy", what="busy reported")
    time.sleep(8)
    owner.idle()

    for result in (hard, soft):
        value = result.get(timeout=TIMEOUT)
        assert result.state == "SUCCESS"
        assert value["cpu_seconds"] >= 1.0 and value["elapsed"] >= 8
    assert "TimeLimitExceeded" not in worker.log_text()


def test_a_task_that_runs_past_its_limit_still_fails_as_celery_promises(app, workers, owner):
    owner.idle()
    gated(workers, "limits-b", owner)
    suspended_then_over = app.signature("compute.diag.burn", (4.0,)).set(time_limit=2).delay()
    wait_for_state(suspended_then_over, "STARTED")
    time.sleep(0.5)
    owner.busy()
    time.sleep(3)  # stopped: does not count
    owner.idle()

    with pytest.raises(Exception, match="TimeLimitExceeded"):
        suspended_then_over.get(timeout=TIMEOUT)
    assert suspended_then_over.state == "FAILURE"


FAST_LEASES = {"IDLE_ACCEL_VISIBILITY_TIMEOUT": "6", "IDLE_ACCEL_UNACKED_RESTORE_INTERVAL": "1"}


def test_a_worker_frozen_past_its_lease_ends_its_copy_when_another_took_the_task(
        app, workers, broker):
    frozen = workers("freeze-a", "--concurrency", "1", env=FAST_LEASES)
    result = app.signature("compute.diag.sleep", (16,)).delay()
    wait_for_state(result, "STARTED")

    os.kill(frozen.pid, signal.SIGSTOP)  # the main process (leases, acks): a closed lid
    try:
        other = workers("freeze-b", "--concurrency", "1", env=FAST_LEASES)
        wait_for(lambda: received([other], result.id) == 1, timeout=TIMEOUT,
                 what="the task handed to the other worker")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    wait_for(lambda: "ended this worker's copy" in frozen.log_text(), timeout=10,
             what="the thawed worker ending its copy")
    value = result.get(timeout=TIMEOUT)

    assert value["hostname"] == other.node and result.state == "SUCCESS"
    assert f"[{result.id}] succeeded" not in frozen.log_text()
    assert "frozen" in frozen.log_text()
    assert app.control.ping(destination=[frozen.node], timeout=5)  # still alive, still serving
    with broker.client() as client:
        wait_for(lambda: client.zcard("unacked_index") == 0, what="the new holder's ack")
        assert client.llen("cpu") == 0


def test_a_short_freeze_keeps_the_task_here_and_runs_it_once(app, workers):
    held = workers("freeze-c", "--concurrency", "1", env=FAST_LEASES)
    result = app.signature("compute.diag.sleep", (3,)).delay()
    wait_for_state(result, "STARTED")
    os.kill(held.pid, signal.SIGSTOP)
    time.sleep(1.5)  # inside the lease: no one else may take it
    os.kill(held.pid, signal.SIGCONT)
    other = workers("freeze-d", "--concurrency", "1", env=FAST_LEASES)

    assert result.get(timeout=TIMEOUT)["hostname"] == held.node
    time.sleep(2)
    assert received([held, other], result.id) == 1


def test_rate_limited_tasks_waiting_for_their_token_keep_their_lease_and_run_once(
        app, workers, broker):
    worker = workers("rate-a", "--concurrency", "1", env=FAST_LEASES)
    replies = app.control.rate_limit("compute.diag.noop", "6/m", destination=[worker.node],
                                     reply=True, timeout=5)
    assert replies and "ok" in replies[0][worker.node]
    sent = [app.signature("compute.diag.noop").delay() for _ in range(3)]

    # One token every 10 s: the last waits 20 s in Celery's bucket, past three
    # 6 s visibility timeouts, unacknowledged and outside worker_state.requests.
    for result in sent:
        assert result.get(timeout=TIMEOUT) == {"hostname": worker.node}
    time.sleep(7)  # a copy handed out again would have been received by now
    assert [received([worker], result.id) for result in sent] == [1, 1, 1]
    # The pool logs "succeeded" just after it stored the result: give the last line time.
    lines = wait_for(lambda: (count := worker.log_text().count("compute.diag.noop[")) >= 6
                     and count, what="every task's 'succeeded' line")
    assert lines == 6  # received + succeeded, each once
    with broker.client() as client:
        assert client.llen("cpu") == 0 and client.zcard("unacked_index") == 0
