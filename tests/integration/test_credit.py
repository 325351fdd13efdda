"""Volunteer credit on real workers: what ran, once per successful task, not for preempted runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

import pytest

from worker import credit
from worker.local.worker_process import cli_command

from .gating import Owner
from .waiting import wait_for, wait_for_state

TIMEOUT = 60


def credits(broker) -> dict[str, dict]:
    with broker.client() as client:
        return {row["node"]: row for row in credit.table(client)}


def test_credit_equals_what_each_volunteer_ran(app, workers, broker, broker_env):
    nodes = [workers(name, "--concurrency", "1").node for name in ("cr-a", "cr-b")]
    results = [app.signature("compute.diag.burn", (0.3,)).delay() for _ in range(6)]
    ran = Counter(result.get(timeout=TIMEOUT)["hostname"] for result in results)
    cpu = Counter()
    for result in results:
        cpu[result.result["hostname"]] += result.result["cpu_seconds"]

    table = wait_for(lambda: sum(r["tasks"] for r in credits(broker).values()) == 6
                     and credits(broker), timeout=10, what="credited")
    shown = subprocess.run([*cli_command(), "fleet", "credits", "--json"],
                           env={**os.environ, **broker_env}, capture_output=True, text=True,
                           timeout=60)

    for node in nodes:
        assert table[node]["tasks"] == ran[node]
        # os.times counts in 10 ms ticks; the task measures with process_time
        slack = 0.02 * ran[node]
        assert cpu[node] - slack <= table[node]["cpu_seconds"] <= cpu[node] + 0.1 * ran[node] + 0.2
        assert table[node]["gpu_seconds"] == 0.0
    assert json.loads(shown.stdout)["credits"] == list(
        sorted(table.values(), key=lambda row: (-row["cpu_seconds"], row["node"])))


def test_a_preempted_run_earns_nothing_and_the_finisher_is_credited_once(
        app, volunteer_pair, broker):
    first, second, result = volunteer_pair

    value = result.get(timeout=TIMEOUT)
    table = wait_for(lambda: credits(broker).get(second.node), timeout=10, what="credited")

    assert value["hostname"] == second.node
    assert first.node not in credits(broker)
    assert table["tasks"] == 1
    remaining = value["cpu_seconds"] - value["resumed_from"]
    assert remaining - 0.05 <= table["cpu_seconds"] <= remaining + 0.3


def _volunteer(workers, name, owner, *args):
    return workers(name, "--concurrency", "1", "--sensor", owner.flag, "--sensor-max-age", "0",
                   "--idle-after", "0.5", *args)


@pytest.fixture
def volunteer_pair(app, workers, tmp_path):
    owner = Owner.away(tmp_path / "owner-a")
    first = _volunteer(workers, "cr-a", owner, "--preempt-after", "1")
    result = app.signature("compute.diag.burn", (2.0,)).delay()
    wait_for_state(result, "STARTED")
    time.sleep(0.8)
    owner.busy()
    wait_for(lambda: "ended, back to the queue" in first.log_text(), timeout=TIMEOUT,
             what="preempted")
    second = _volunteer(workers, "cr-b", Owner.away(tmp_path / "owner-b"))
    return first, second, result
