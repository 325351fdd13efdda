"""`idle-accel fleet emergency on|off` across real workers: fast, for late joiners, owners first."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from worker.local.worker_process import cli_command

from .gating import Owner, fleet
from .waiting import wait_for

TIMEOUT = 30


def switch(broker_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), "fleet", "emergency", *args],
                          env={**os.environ, **broker_env}, capture_output=True, text=True,
                          timeout=60)


def consuming(broker, node: str) -> list[str]:
    return fleet(broker).get(node, {}).get("consuming", [])


def test_the_whole_fleet_switches_at_once_and_back(app, workers, broker, broker_env):
    volunteer = workers("vol-1", "--concurrency", "1", "--region", "eu-west")
    base = workers("base-1", "--concurrency", "1", "--mode", "dedicated")
    normal = {node: wait_for(lambda n=node: consuming(broker, n), what="consuming")
              for node in (volunteer.node, base.node)}

    done = switch(broker_env, "on")
    # Every running worker answered the broadcast (the switch is applied on the spot);
    # how fast is a benchmark's business, not a test's (shared, noisy machines).
    wait_for(lambda: consuming(broker, volunteer.node) == ["emergency", "emergency@eu-west"]
             and consuming(broker, base.node) == ["emergency"], timeout=15, what="switched")
    urgent = app.signature("compute.diag.noop").apply_async(queue="emergency")
    ordinary = app.signature("compute.diag.noop").delay()

    assert done.returncode == 0 and "2 of 2 workers switched" in done.stdout, done.stderr
    assert urgent.get(timeout=TIMEOUT)["hostname"] in (volunteer.node, base.node)
    time.sleep(1)
    assert ordinary.state == "PENDING"  # normal work waits during the emergency

    assert switch(broker_env, "off").returncode == 0
    wait_for(lambda: consuming(broker, volunteer.node) == normal[volunteer.node], timeout=15,
             what="back to normal")
    assert ordinary.get(timeout=TIMEOUT)["hostname"] in (volunteer.node, base.node)
    assert consuming(broker, base.node) == normal[base.node]


def test_a_worker_that_joins_later_learns_the_mode(app, workers, broker, broker_env):
    assert switch(broker_env, "on").returncode == 0

    late = workers("late-1", "--concurrency", "1")

    assert wait_for(lambda: consuming(broker, late.node), timeout=10,
                    what="consuming") == ["emergency"]
    assert fleet(broker)[late.node]["fleet_mode"] == "emergency"


def test_a_busy_owner_keeps_the_machine_unless_the_volunteer_opted_in(
        app, workers, broker, broker_env, tmp_path):
    owner = Owner(tmp_path / "owner")  # busy
    shy = workers("shy-1", "--concurrency", "1", "--sensor", owner.flag,
                  "--sensor-max-age", "0")
    keen_owner = Owner(tmp_path / "keen-owner")  # busy too
    keen = workers("keen-1", "--concurrency", "1", "--sensor", keen_owner.flag,
                   "--sensor-max-age", "0", "--allow-emergency-when-busy")

    assert switch(broker_env, "on").returncode == 0
    urgent = [app.signature("compute.diag.noop").apply_async(queue="emergency")
              for _ in range(4)]

    assert {result.get(timeout=TIMEOUT)["hostname"] for result in urgent} == {keen.node}
    assert consuming(broker, shy.node) == []


def test_running_normal_tasks_are_requeued_when_asked(app, workers, broker, broker_env):
    worker = workers("vol-1", "--concurrency", "1")
    running = app.signature("compute.diag.sleep", (30,)).delay()
    wait_for(lambda: running.state == "STARTED", timeout=TIMEOUT, what="started")

    assert switch(broker_env, "on", "--requeue-running").returncode == 0
    wait_for(lambda: "ended, back to the queue" in worker.log_text(), timeout=10,
             what="requeued")
    urgent = app.signature("compute.diag.noop").apply_async(queue="emergency")

    assert urgent.get(timeout=TIMEOUT)["hostname"] == worker.node
    with broker.client() as client:
        wait_for(lambda: client.llen("cpu") == 1, timeout=10, what="back in its queue")
    assert running.state != "FAILURE"



def test_the_switch_counts_what_workers_report_not_what_it_sent(
        workers, broker, broker_env, tmp_path):
    """A busy owner's worker reports the new mode at once; a frozen one is named as not
    switched (the count comes from the status reports, not from a broadcast's replies)."""
    busy = workers("vol-busy", "--concurrency", "1", "--sensor", Owner(tmp_path / "o").flag,
                   "--sensor-max-age", "0")
    frozen = workers("vol-frozen", "--concurrency", "1")
    for node in (busy.node, frozen.node):
        wait_for(lambda n=node: n in fleet(broker), what="status reported")

    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        done = switch(broker_env, "on", "--wait", "3")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    assert done.returncode == 0, done.stderr
    assert "1 of 2 workers switched" in done.stdout
    assert "vol-frozen@" in done.stdout and "vol-busy@" not in done.stdout.split("switched")[-1]
    assert fleet(broker)[busy.node]["fleet_mode"] == "emergency"
    wait_for(lambda: fleet(broker)[frozen.node]["fleet_mode"] == "emergency", timeout=15,
             what="the thawed worker catching up")
    assert switch(broker_env, "off").returncode == 0
