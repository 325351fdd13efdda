"""Celery's own integration suite against ``idle-accel worker``: the session worker, replaced.

Celery's ``t/integration`` starts its worker in the test process
(``celery_session_worker``). This fixture starts the project's worker as a
separate process instead, through the CLI, exactly as a volunteer runs it
(gate, leases, guards) and named as the suite expects, with Celery's test tasks (``--include
t.integration.tasks``) and the suite's ``celery`` queue beside the project's
own (chain links and chord bodies the worker sends go to its default ``cpu``).
``run.py`` appends an import of this module to the suite's conftest.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from celery.utils.nodenames import anon_nodename

from worker.idle import hostfile
from worker.local.worker_process import WorkerProcess


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app):
    folder = Path(tempfile.mkdtemp(prefix="celery-suite-"))
    owner = folder / "owner"
    hostfile.write(owner, {"state": "idle", "at": time.time()})
    env = {**os.environ,
           "CELERY_BROKER_URL": os.environ["TEST_BROKER"],
           "CELERY_RESULT_BACKEND": os.environ["TEST_BACKEND"]}
    # The suite addresses its in-process worker as anon_nodename(): gen<pid>@<host>.
    worker = WorkerProcess(
        anon_nodename(), env=env, log_path=Path(os.environ.get("SUITE_WORKER_LOG",
                                                              folder / "worker.log")),
        args=("--include", "t.integration.tasks", "--queues", "celery,cpu",
              "--concurrency", os.environ.get("SUITE_CONCURRENCY", "1"),
              "--sensor", f"file:{owner}", "--sensor-max-age", "0", "--idle-after", "0"))
    worker.start()
    worker.wait_ready(celery_session_app, timeout=60)
    yield worker
    worker.stop(timeout=30)
