"""What a worker publishes about itself, read back as an admin would: CLI, JSON, inspect stats."""

from __future__ import annotations

import json
import os
import subprocess
import time

from worker.local.worker_process import cli_command

from .gating import Owner, fleet
from .waiting import wait_for, wait_for_state

TIMEOUT = 30


def fleet_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), "fleet", "status", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_fleet_status_lists_each_worker_with_state_reasons_mode_queues_and_hardware(
        app, workers, broker_env, tmp_path):
    owner = Owner(tmp_path / "owner")
    volunteer = workers("desk-1", "--concurrency", "1", "--sensor", owner.flag,
                        "--sensor-max-age", "0", "--region", "eu-west")
    base = workers("base-1", "--concurrency", "1", "--mode", "dedicated")

    done = fleet_status(broker_env, "--json")
    table = fleet_status({**broker_env, "COLUMNS": "250"})  # rich wraps at 80 off a tty

    assert done.returncode == 0, done.stderr
    found = {document["node"]: document for document in json.loads(done.stdout)["workers"]}
    assert set(found) == {volunteer.node, base.node}
    desk = found[volunteer.node]
    assert (desk["mode"], desk["state"], desk["region"]) == ("volunteer", "busy", "eu-west")
    assert desk["reasons"] == [{"code": "host_busy", "message": "host sensor says busy"}]
    assert desk["queues"][0] == "cpu" and "cpu@eu-west" in desk["queues"]
    assert "cpu.ram2" in desk["queues"] and "cpu.ram2@eu-west" in desk["queues"]
    assert desk["consuming"] == []
    assert desk["hardware"]["cores"] == os.cpu_count()
    assert desk["hardware"]["ram_bytes"] > 0
    assert (found[base.node]["mode"], found[base.node]["state"]) == ("dedicated", "idle")
    assert table.returncode == 0, table.stderr
    assert volunteer.node in table.stdout and "host sensor says busy" in table.stdout
    assert "2 workers" in table.stdout


def test_a_dead_worker_disappears_from_the_fleet(app, workers, broker, tmp_path):
    env = {"IDLE_ACCEL_STATUS_INTERVAL": "1"}
    worker = workers("short-lived", "--concurrency", "1", env=env)
    wait_for(lambda: worker.node in fleet(broker), what="worker listed")

    worker.kill()
    gone = time.monotonic()
    wait_for(lambda: worker.node not in fleet(broker), timeout=TIMEOUT, what="worker gone")

    assert time.monotonic() - gone <= 3 * 1 + 1  # the TTL: three report intervals


def test_owner_state_is_in_inspect_stats_for_flower(app, workers, tmp_path):
    owner = Owner(tmp_path / "owner")
    worker = workers("desk-1", "--concurrency", "1", "--sensor", owner.flag,
                     "--sensor-max-age", "0")

    stats = app.control.inspect(destination=[worker.node], timeout=5).stats()[worker.node]

    assert stats["idle_accel"]["state"] == "busy"
    assert stats["idle_accel"]["reasons"][0]["code"] == "host_busy"
    assert stats["leases"]["interval"] == 5.0


def test_region_pinned_work_reaches_only_workers_of_that_region(app, workers):
    local = workers("eu-1", "--concurrency", "1", "--region", "eu-west")
    foreign = [workers("us-1", "--concurrency", "1", "--region", "us-east"),
               workers("any-1", "--concurrency", "1")]

    # The region is saturated (its one slot sleeps) while the others are idle...
    blocker = app.signature("compute.diag.sleep", (1.5,)).apply_async(queue="cpu@eu-west")
    wait_for_state(blocker, "STARTED")
    pinned = [app.signature("compute.diag.noop").apply_async(queue="cpu@eu-west")
              for _ in range(200)]
    unpinned = [app.signature("compute.diag.noop").apply_async() for _ in range(40)]

    # ...and still no pinned task of the 200 runs elsewhere; unpinned work runs anywhere.
    assert {result.get(timeout=TIMEOUT)["hostname"] for result in pinned} == {local.node}
    ran_unpinned = {result.get(timeout=TIMEOUT)["hostname"] for result in unpinned}
    assert {worker.node for worker in foreign} <= ran_unpinned
