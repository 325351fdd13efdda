"""The shipped compose stack on a real Docker engine, as an admin and a volunteer see it.

One stack per module (``stack``): Redis, the coordinator, Flower, the metrics
exporter and a volunteer's worker, built from the project's Dockerfiles. The
host submits tasks as the team (Redis is published on loopback by the test's
override) and plays the volunteer's owner through the sensor file.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from compute import keys
from compute.app import create_app
from compute.settings import Settings

from .conftest import Stack

pytestmark = pytest.mark.timeout(900)  # the first test also builds the images

TIMEOUT = 90
TEAM_SERVICES = ("redis", "coordinator", "flower", "metrics")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.fixture(scope="module")
def running(stack: Stack) -> Stack:
    """The team's side up and healthy, one volunteer enrolled, its worker up and healthy."""
    stack.compose("up", "-d", *TEAM_SERVICES, timeout=600)
    stack.wait_healthy(*TEAM_SERVICES)
    # As docker-compose.yml's header says: enroll as the admin, keep the URL as a secret.
    enrolled = stack.compose(
        "run", "--rm", "-e", "CELERY_BROKER_URL", "--entrypoint", "idle-accel", "coordinator",
        "volunteer", "enroll", "box", "--url-only",
        env={"CELERY_BROKER_URL": f"redis://admin:{stack.passwords['admin']}@redis:6379/0"})
    url = enrolled.stdout.strip().splitlines()[-1]
    assert url.startswith("redis://vol-box:"), enrolled.stdout
    stack.write_secret("volunteer_broker_url", url)
    stack.compose("up", "-d", "worker")
    return stack


@pytest.fixture(scope="module")
def team(running: Stack):
    app = create_app(Settings.load(broker_url=running.url("team")))
    yield app
    app.close()


def test_the_stack_comes_up_healthy_and_a_task_from_the_host_runs_in_the_worker(
        running: Stack, team) -> None:
    with redis.Redis.from_url(running.url("admin")) as admin:
        assert admin.config_get("maxmemory")["maxmemory"] == str(256 * 2**20)
        assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        running.wait_healthy("worker")
        # Healthy only once the worker reported: its report is there (republished by the
        # coordinator into the team's keys).
        host = running.container("worker")["Config"]["Hostname"]
        # The coordinator republishes it as volunteer@host.
        assert admin.exists(keys.worker(f"box@{host}")), sorted(
            admin.scan_iter("idle-accel:worker:*"))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics",
                                     timeout=10).read().decode()
    assert "idle_accel" in metrics

    result = team.send_task("compute.diag.noop")
    assert running.result(result, TIMEOUT) == {"hostname": f"idle-accel@{host}"}

    # Flower keeps its database on its volume, which belongs to its user (10001).
    listed = running.compose("exec", "-T", "flower", "ls", "-ln", "/data").stdout
    assert "10001 10001" in listed and "flower.db" in listed, listed


def test_the_owner_returning_stops_the_task_inside_the_container(running: Stack, team) -> None:
    running.wait_healthy("worker")
    result = team.send_task("compute.diag.burn", (4.0,))
    main = psutil.Process(running.container("worker")["State"]["Pid"])

    def pool_states() -> set[str]:
        found = set()
        for child in main.children(recursive=True):
            try:
                found.add(child.status())
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + TIMEOUT
    while result.state != "STARTED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert result.state == "STARTED"
    running.owner_busy = True
    try:
        deadline = time.monotonic() + 30
        while psutil.STATUS_STOPPED not in pool_states() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert psutil.STATUS_STOPPED in pool_states()  # the pool process in state T
        time.sleep(3)
        assert result.state == "STARTED"  # held, not failed nor handed back
    finally:
        running.owner_busy = False
    value = running.result(result, TIMEOUT)
    assert value["cpu_seconds"] >= 4.0 and value["elapsed"] >= 7


@pytest.mark.parametrize("service", ["worker", "coordinator", "flower", "metrics", "redis"])
def test_every_service_runs_unprivileged_on_a_read_only_root(running: Stack, service) -> None:
    inspected = running.container(service)
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["CapDrop"] == ["ALL"]
    status = _status(inspected["State"]["Pid"])
    uid = int(status["Uid"].split()[0])
    assert uid == (10002 if service == "redis" else 10001), status["Uid"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    # Passwords reach the service as files (compose secrets), never in its environment.
    environment = " ".join(inspected["Config"]["Env"])
    assert not [role for role, password in running.passwords.items() if password in environment]
    assert "vol-box:" not in environment  # the volunteer's URL is a file too
    denied = running.compose("exec", "-T", service, "touch", "/probe", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr + denied.stdout


def test_a_placeholder_password_stops_redis(engine, tmp_path) -> None:
    placeholder = Stack(engine, tmp_path)
    try:
        placeholder.write_secret("redis_team_password", "change-me-team")
        placeholder.compose("up", "-d", "redis")
        deadline = time.monotonic() + 60
        said = "/run/secrets/redis_team_password is a placeholder (change-me-...)"
        while said not in placeholder.logs("redis") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert said in placeholder.logs("redis")
        # Its restart policy starts it again and again (with a growing pause): look at it
        # between two starts, when the exit code is the last run's.
        while time.monotonic() < deadline:
            state = placeholder.container("redis")["State"]
            if state["Restarting"] or not state["Running"]:
                break
            time.sleep(0.2)
        assert state["ExitCode"] == 2, state
        assert state.get("Health", {}).get("Status") != "healthy"
        with pytest.raises(redis.ConnectionError):  # nothing listens: it never started
            redis.Redis(port=placeholder.redis_port, socket_connect_timeout=2).ping()
    finally:
        placeholder.stop()


def test_the_gpu_profile_renders_and_says_why_it_cannot_start_without_a_gpu(
        running: Stack) -> None:
    rendered = running.compose("--profile", "gpu", "config")
    assert "worker-gpu" in rendered.stdout and "nvidia" in rendered.stdout
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA GPU: the profile would start")
    started = running.compose("--profile", "gpu", "up", "-d", "worker-gpu", check=False)
    assert started.returncode != 0
    assert 'could not select device driver "nvidia"' in started.stderr, started.stderr
