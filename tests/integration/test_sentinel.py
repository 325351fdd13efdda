"""Redis Sentinel: the fleet on a ``sentinel://`` URL carries on when its primary dies.

A primary, a replica and three sentinels on loopback; two dedicated workers,
the team's client and the project's own Redis clients (leases, status, the
``fleet`` CLI) on one Sentinel URL. Tasks are sent and replicated, the primary
is killed with SIGKILL while the workers run them, the sentinels promote the
replica, and every task completes; a task whose acknowledgement the replica
had not received when the primary died runs again (at least once, as after any
broker loss), and the tests count them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from compute.app import create_app
from compute.settings import Settings
from worker.local.worker_process import WorkerProcess, cli_command

from .gating import received
from .sentinel import MASTER, SentinelGroup

TASKS = 120


@pytest.fixture
def group(tmp_path):
    started = SentinelGroup(tmp_path / "sentinel").start()
    try:
        yield started
    finally:
        started.stop()


def test_a_killed_primary_fails_over_and_every_task_completes(group, tmp_path):
    url = group.url()
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
           "IDLE_ACCEL_SENTINEL_MASTER": MASTER}
    app = create_app(Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER))
    workers = []
    try:
        for name in ("sen-a", "sen-b"):
            worker = WorkerProcess(name, env=env, log_path=tmp_path / f"{name}.log",
                                   args=["--mode", "dedicated", "--concurrency", "2"])
            workers.append(worker)
            worker.start()
        for worker in workers:
            worker.wait_ready(app)

        results = [app.signature("compute.diag.burn", (0.15,)).delay() for _ in range(TASKS)]
        group.wait_replicated()  # every task is on the replica before the primary dies
        while sum(result.ready() for result in results) < TASKS // 4:
            time.sleep(0.05)
        failover = group.kill_primary()
        killed_at = time.monotonic()

        done = [result.get(timeout=180) for result in results]
        recovered = time.monotonic() - killed_at
        fleet = subprocess.run([*cli_command(), "fleet", "status", "--json"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, **env})
        alive = [worker.alive for worker in workers]
    finally:
        for worker in workers:
            worker.stop(timeout=20)
        app.close()

    twice = sum(received(workers, result.id) > 1 for result in results)
    print(f"\nsentinel: failover {failover:.1f} s after the kill; all {TASKS} tasks done "
          f"{recovered:.1f} s after it; {twice} ran twice")
    assert len(done) == TASKS and all(isinstance(value, dict) for value in done)
    assert group.primary_port() == group.replica.port
    assert fleet.returncode == 0, fleet.stderr
    nodes = {worker["node"] for worker in json.loads(fleet.stdout)["workers"]}
    assert {worker.node for worker in workers} <= nodes  # the project's own client, promoted
    assert alive == [True, True]  # both rode through the failover
