"""RabbitMQ quorum queues (``IDLE_ACCEL_QUEUE_TYPE=quorum``): every part declares them alike,
and a cluster node stopped under load loses no task.

On the machine's RabbitMQ (a vhost of its own): the team's client, the gated
worker (which adds and cancels queues at run time: tiers, regions, emergency)
and the CLI all declare quorum queues, so none meets RabbitMQ's
``inequivalent arg 'x-queue-type'``; a classic-configured part meeting a quorum
queue fails with that message rather than using it.

On a 3-node cluster of its own (``worker.local.rabbit_cluster``): two dedicated
workers and the team's client all connected through node 1, where the queues'
leaders live; node 1 is killed (SIGKILL) while the workers run the tasks.
The other two elect new leaders, everyone fails over to them, and every task
completes. A task running when the node died runs again (RabbitMQ requeues an
unacknowledged delivery of a lost connection, and the worker ends its own
copy: worker_cancel_long_running_tasks_on_connection_loss); the test counts
them, and none is lost.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from compute.app import create_app
from compute.settings import Settings
from worker.local.rabbit_cluster import RabbitCluster
from worker.local.rabbit_vhost import ctl
from worker.local.worker_process import WorkerProcess, cli_command

from .gating import received
from .test_emergency import switch

TASKS = 220


def _types(vhost: str) -> dict[str, str]:
    listed = ctl("list_queues", "-p", vhost, "name", "type", "-q")
    return {line.split()[0]: line.split()[1] for line in listed.splitlines() if line.strip()}


def test_every_part_declares_quorum_queues_alike(rabbit, broker, workers, tmp_path):
    env = {"CELERY_BROKER_URL": rabbit.url, "CELERY_RESULT_BACKEND": broker.url(0),
           "IDLE_ACCEL_QUEUE_TYPE": "quorum"}
    app = create_app(Settings.load(broker_url=rabbit.url, result_backend=broker.url(0),
                                   queue_type="quorum"))
    try:
        worker = workers("quorum-a", "--concurrency", "2", "--region", "eu-west",
                         "--queues", "cpu,cpu.ram2,batch", env=env, ready=False)
        worker.wait_ready(app, timeout=60)
        sent = [app.signature("compute.diag.noop").set(queue=queue).delay()
                for queue in ("cpu", "cpu@eu-west", "cpu.ram2", "batch")]
        assert [result.get(timeout=60) for result in sent] == [{"hostname": worker.node}] * 4
        # The CLI, a third part, sends into the same queues.
        done = subprocess.run([*cli_command(), "submit", "task", "compute.diag.noop",
                               "--region", "eu-west", "--timeout", "60"],
                              capture_output=True, text=True, timeout=90,
                              env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        # The emergency switch makes the gate add queues at run time (emergency, and its
        # region's emergency@eu-west): made the app's way, they are quorum queues too.
        assert switch(env, "on").returncode == 0
        urgent = app.signature("compute.diag.noop").apply_async(queue="emergency@eu-west")
        assert urgent.get(timeout=60) == {"hostname": worker.node}
        assert switch(env, "off").returncode == 0
    finally:
        app.close()
    types = _types(rabbit.name)
    for queue in ("cpu", "cpu@eu-west", "cpu.ram2", "cpu.ram2@eu-west", "batch",
                  "batch@eu-west", "emergency", "emergency@eu-west"):
        assert types.get(queue) == "quorum", (queue, types)
    assert not [name for name in types if name.startswith("celery_delayed")]  # not used

    # A part left on classic queues is refused by the broker, loudly, not served.
    classic = create_app(Settings.load(broker_url=rabbit.url, result_backend=broker.url(0)))
    try:
        with pytest.raises(Exception, match="x-queue-type"):
            classic.signature("compute.diag.noop").delay()
    finally:
        classic.close()


@pytest.fixture(scope="module")
def cluster():
    with RabbitCluster(3) as started:
        yield started


def test_a_cluster_node_killed_under_load_loses_no_task(cluster, broker, tmp_path):
    url = cluster.url  # node 1 first: every client connects there, and the leaders live there
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": broker.url(0),
           "IDLE_ACCEL_QUEUE_TYPE": "quorum"}
    app = create_app(Settings.load(broker_url=url, result_backend=broker.url(0),
                                   queue_type="quorum"))
    started = []
    try:
        for name in ("qq-a", "qq-b"):
            worker = WorkerProcess(name, env=env, log_path=tmp_path / f"{name}.log",
                                   args=["--mode", "dedicated", "--concurrency", "2"])
            started.append(worker)
            worker.start()
        for worker in started:
            worker.wait_ready(app, timeout=60)
        leaders = ctl_leaders(cluster)
        assert leaders.get("cpu") == cluster.nodes[0].name, leaders

        results = [app.signature("compute.diag.burn", (0.1,)).delay() for _ in range(TASKS)]
        while sum(result.ready() for result in results) < TASKS // 4:
            time.sleep(0.05)
        done_before = {result.id for result in results if result.ready()}
        cluster.stop(0, kill=True)
        killed_at = time.monotonic()
        first_after = None
        while first_after is None:
            if any(result.ready() for result in results if result.id not in done_before):
                first_after = time.monotonic() - killed_at
            elif time.monotonic() - killed_at > 180:
                break
            time.sleep(0.02)
        values = [result.get(timeout=240) for result in results]
        recovered = time.monotonic() - killed_at
        alive = [worker.alive for worker in started]
        leader_after = ctl_leaders(cluster, via=1).get("cpu")
    finally:
        for worker in started:
            worker.stop(timeout=20)
        app.close()

    twice = sum(received(started, result.id) > 1 for result in results)
    print(f"\nquorum queues: node killed; first task done {first_after:.2f} s after; all "
          f"{TASKS} done {recovered:.1f} s after; {twice} ran twice")
    assert first_after is not None
    assert len(values) == TASKS and all(isinstance(value, dict) for value in values)
    assert {value["hostname"] for value in values} <= {w.node for w in started}
    assert alive == [True, True]  # both rode through the node's loss
    assert leader_after in (cluster.nodes[1].name, cluster.nodes[2].name)
    # At most what the workers held unacknowledged when the node died: each consumes one
    # queue (cpu) with a prefetch of its 2 processes.
    assert twice <= 2 * 2


def ctl_leaders(cluster: RabbitCluster, via: int = 0) -> dict[str, str]:
    listed = cluster.ctl(via, "list_queues", "name", "leader", "-q")
    return {line.split()[0]: line.split()[1] for line in listed.splitlines()
            if len(line.split()) == 2}
