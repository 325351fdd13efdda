"""A broker outage in the middle of a task: the worker lives, the task ends once, nothing leaks.

The test restarts a Redis of its own: the session's broker stays untouched, since
Celery shares broker connections between apps of one process (kombu's global
pools) and a restart would leave the next test a dead pooled connection.
"""

from __future__ import annotations

import time

from compute.app import create_app
from compute.settings import Settings
from worker.celery_gate import close_client
from worker.idle import hostfile
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess

from .gating import received
from .waiting import wait_for, wait_for_state

TIMEOUT = 60


def test_a_task_running_through_a_broker_restart_is_acknowledged_and_the_worker_lives(tmp_path):
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    redis.start()
    app = create_app(Settings.load(broker_url=redis.url(0)))
    owner = tmp_path / "owner"
    hostfile.write(owner, {"state": "idle", "at": time.time()})
    worker = WorkerProcess("outage-a", log_path=tmp_path / "outage-a.log", env={
        "CELERY_BROKER_URL": redis.url(0), "CELERY_RESULT_BACKEND": redis.url(0)},
        args=["--concurrency", "1", "--sensor", f"file:{owner}", "--sensor-max-age", "0",
              "--idle-after", "0"])
    try:
        worker.start().wait_ready(app)
        result = app.signature("compute.diag.sleep", (3,)).delay()
        wait_for_state(result, "STARTED")

        redis.restart()  # the task ends, and is acknowledged, after the reconnect

        with redis.client() as client:
            def succeeded(task_id: str) -> bool:
                return b'"SUCCESS"' in (client.get(f"celery-task-meta-{task_id}") or b"")

            wait_for(lambda: succeeded(result.id), timeout=TIMEOUT, what="the result")
            after = app.send_task("compute.diag.noop")
            wait_for(lambda: succeeded(after.id), timeout=TIMEOUT, what="a task after it")
            assert worker.alive and "Unrecoverable error" not in worker.log_text()
            wait_for(lambda: client.hlen("unacked") == 0, timeout=10, what="acknowledged")
        assert received([worker], result.id) == 1
    finally:
        worker.stop()
        close_client(app)
        redis.stop()
