"""The idle-gated worker on a real Redis: stop taking, suspend in place, resume, preempt, requeue.

Each worker reads its owner's state from a sensor file the test writes
(``--sensor file:PATH``), exactly as a containerized volunteer does.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from .gating import Owner, fleet, pool_processes, received, statuses
from .waiting import wait_for, wait_for_state

TIMEOUT = 30


@pytest.fixture
def owner(tmp_path) -> Owner:
    return Owner(tmp_path / "owner-a")


@pytest.fixture
def volunteer(workers):
    """Start a one-process volunteer gated by ``owner`` (``--sensor file:...``)."""

    def start(name: str, owner: Owner, *args: str, idle_after: float = 0.5,
              preempt_after: float = 300.0):
        return workers(name, "--concurrency", "1", "--sensor", owner.flag,
                       "--sensor-max-age", "0", "--idle-after", str(idle_after),
                       "--preempt-after", str(preempt_after), *args)

    return start


def active_queue_names(app, node: str) -> list[str]:
    for attempt in range(3):  # the client's pooled connection may predate a broker restart
        try:
            replies = app.control.inspect(destination=[node], timeout=2).active_queues() or {}
        except Exception:  # redis-py or kombu connection errors
            if attempt == 2:
                raise
            continue
        return [queue["name"] for queue in replies.get(node, [])]
    raise AssertionError("unreachable")


def cpu_time(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def test_a_busy_owner_takes_no_task_and_consumes_no_queue(app, volunteer, owner, broker):
    worker = volunteer("gate-a", owner)

    sent = [app.signature("compute.diag.noop").delay() for _ in range(3)]
    time.sleep(2)

    assert all(result.state == "PENDING" for result in sent)
    with broker.client() as client:
        assert client.llen("cpu") == 3
    assert active_queue_names(app, worker.node) == []
    assert "Task compute.diag.noop" not in worker.log_text()
    status = fleet(broker)[worker.node]
    assert status["state"] == "busy" and status["consuming"] == []
    assert status["reasons"][0]["code"] == "host_busy"
    # The log says why it waits, in the owner's words (the sensor file's reason), once.
    assert worker.log_text().count("taking no tasks (owner busy): ") == 1
    assert "taking no tasks (owner busy): " + status["reasons"][0]["message"] in worker.log_text()


def test_idle_again_consumes_within_idle_after_plus_one_second(app, volunteer, owner, broker):
    worker = volunteer("gate-a", owner, idle_after=2.0)
    sent = [app.signature("compute.diag.noop").delay() for _ in range(3)]
    time.sleep(1)
    assert all(result.state == "PENDING" for result in sent)

    owner.idle()
    went_idle = time.monotonic()
    for result in sent:
        assert result.get(timeout=TIMEOUT) == {"hostname": worker.node}
    waited = time.monotonic() - went_idle

    assert waited <= 2.0 + 1.0, f"consumed {waited:.2f} s after the owner left"
    assert active_queue_names(app, worker.node) == fleet(broker)[worker.node]["queues"]


def test_a_running_burn_is_stopped_while_busy_and_finishes_correctly_after(
        app, volunteer, owner, broker):
    owner.idle()
    worker = volunteer("gate-a", owner)
    result = app.signature("compute.diag.burn", (1.5,)).delay()
    wait_for_state(result, "STARTED")
    time.sleep(0.3)

    owner.busy()
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "busy", what="busy reported")
    processes = pool_processes(worker)
    assert statuses(worker) == {psutil.STATUS_STOPPED}  # reported busy only once stopped
    used = cpu_time(processes)
    time.sleep(1.5)
    assert cpu_time(processes) - used < 0.02  # no CPU at all while stopped
    assert result.state == "STARTED"
    assert fleet(broker)[worker.node]["suspended"] == 1

    owner.idle()
    value = result.get(timeout=TIMEOUT)

    assert value["hostname"] == worker.node
    assert value["cpu_seconds"] >= 1.5 and value["resumed_from"] == 0.0
    assert value["elapsed"] >= 1.5 + 1.5  # it really waited while stopped
    assert psutil.STATUS_STOPPED not in statuses(worker)


def test_preempted_burn_is_requeued_and_resumed_from_its_checkpoint_elsewhere_once(
        app, volunteer, owner, tmp_path, broker):
    owner.idle()
    first = volunteer("gate-a", owner, preempt_after=1.0)
    result = app.signature("compute.diag.burn", (3.0,)).delay()
    wait_for_state(result, "STARTED")
    time.sleep(1.0)  # about a second of progress, checkpointed every 0.2 s

    owner.busy()
    wait_for(lambda: "ended, back to the queue" in first.log_text(), timeout=TIMEOUT,
             what="preemption")
    assert result.state != "FAILURE"
    other = Owner.away(tmp_path / "owner-b")
    second = volunteer("gate-b", other)
    value = result.get(timeout=TIMEOUT)

    assert value["hostname"] == second.node
    assert 0.5 <= value["resumed_from"] < 3.0  # continued, not started again from zero
    assert value["cpu_seconds"] >= 3.0
    assert result.state == "SUCCESS"
    assert received([first], result.id) == 1 and received([second], result.id) == 1
    assert "succeeded" not in first.log_text()
    with broker.client() as client:
        assert client.llen("cpu") == 0
        wait_for(lambda: client.hlen("unacked") == 0, what="unacked emptied")


def test_after_a_broker_restart_a_busy_worker_still_takes_nothing(
        app, volunteer, owner, broker):
    worker = volunteer("gate-a", owner)
    broker.restart()
    wait_for(lambda: worker.log_text().count("Connected to redis") >= 2, timeout=TIMEOUT,
             what="reconnect")
    sent = app.signature("compute.diag.noop").delay()
    time.sleep(2)

    assert sent.state == "PENDING"
    assert active_queue_names(app, worker.node) == []

    owner.idle()
    assert sent.get(timeout=TIMEOUT) == {"hostname": worker.node}


def test_a_killed_worker_has_its_task_finished_elsewhere_within_30_seconds(
        app, volunteer, owner, tmp_path):
    owner.idle()
    doomed = volunteer("gate-a", owner)
    result = app.signature("compute.diag.sleep", (4,)).delay()
    wait_for_state(result, "STARTED")
    other = Owner.away(tmp_path / "owner-b")
    survivor = volunteer("gate-b", other)

    doomed.kill()  # power cut: the worker and its pool, SIGKILL
    killed = time.monotonic()
    value = result.get(timeout=60)
    recovered = time.monotonic() - killed - value["elapsed"]

    assert value["hostname"] == survivor.node
    assert recovered < 30, f"task ran elsewhere {recovered:.1f} s after the kill"


def test_a_task_suspended_longer_than_the_visibility_timeout_runs_exactly_once(
        app, volunteer, owner, tmp_path, broker, workers):
    owner.idle()
    env = {"IDLE_ACCEL_VISIBILITY_TIMEOUT": "6", "IDLE_ACCEL_UNACKED_RESTORE_INTERVAL": "1"}
    holder = workers("gate-a", "--concurrency", "1", "--sensor", owner.flag,
                     "--sensor-max-age", "0", "--idle-after", "0.5", env=env)
    result = app.signature("compute.diag.burn", (0.5,)).delay()
    wait_for_state(result, "STARTED")
    owner.busy()
    other = Owner.away(tmp_path / "owner-b")
    bystander = workers("gate-b", "--concurrency", "1", "--sensor", other.flag,
                        "--sensor-max-age", "0", "--idle-after", "0", env=env)

    time.sleep(15)  # suspended for 2.5 visibility timeouts, while gate-b sweeps and waits
    assert received([bystander], result.id) == 0
    owner.idle()
    value = result.get(timeout=TIMEOUT)

    assert value["hostname"] == holder.node
    assert received([holder, bystander], result.id) == 1
    with broker.client() as client:
        assert client.llen("cpu") == 0


def test_dedicated_mode_consumes_while_the_sensor_says_busy(app, volunteer, owner, broker):
    worker = volunteer("base-a", owner, "--mode", "dedicated")

    assert app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT) == {
        "hostname": worker.node}
    status = wait_for(lambda: fleet(broker)[worker.node]["consuming"] and
                      fleet(broker)[worker.node], what="status shows consuming")
    assert (status["mode"], status["state"]) == ("dedicated", "idle")
    assert status["consuming"] == status["queues"] and status["queues"][0] == "cpu"


def test_sigterm_while_suspended_requeues_the_task_and_exits(
        app, volunteer, owner, tmp_path, broker):
    owner.idle()
    worker = volunteer("gate-a", owner)
    result = app.signature("compute.diag.burn", (2.0,)).delay()
    wait_for_state(result, "STARTED")
    owner.busy()
    wait_for(lambda: statuses(worker) == {psutil.STATUS_STOPPED}, what="stopped")

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=TIMEOUT) == 0
    assert worker.node not in fleet(broker)  # status withdrawn at once
    other = Owner.away(tmp_path / "owner-b")
    successor = volunteer("gate-b", other)

    assert result.get(timeout=TIMEOUT)["hostname"] == successor.node
