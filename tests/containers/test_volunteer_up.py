"""``idle-accel volunteer up|status|down`` on a real Docker engine, as a volunteer runs it.

The broker is a private ``redis-server`` on this machine's loopback, so the
container runs with ``--network host``. ``up`` starts the host sensor and the
locked-down worker container; the worker reports to Redis; ``down`` stops both.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from compute import keys
from worker.local.docker_engine import WORKER_IMAGE, DockerEngine
from worker.local.redis_server import RedisServer
from worker.local.worker_process import cli_command

pytestmark = pytest.mark.timeout(900)  # the first test also builds the images


@pytest.fixture
def redis_on_loopback(tmp_path) -> RedisServer:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def volunteer(engine: DockerEngine, sensor_dir: Path, *args: str, broker: str = ""
              ) -> subprocess.CompletedProcess[str]:
    env = {**engine.env, "CELERY_BROKER_URL": broker or "redis://127.0.0.1:1/0"}
    return subprocess.run([*cli_command(), "volunteer", *args, "--sensor-dir", str(sensor_dir)],
                          env=env, capture_output=True, text=True, timeout=180)


def test_up_status_and_down_run_the_locked_down_worker_and_the_host_sensor(
        engine, redis_on_loopback, tmp_path) -> None:
    sensor_dir = tmp_path / "sensor"
    url = redis_on_loopback.url(0)
    started = volunteer(engine, sensor_dir, "up", "--image", WORKER_IMAGE, "--network", "host",
                        "--concurrency", "1", "--cpus", "1", "--memory", "1g", broker=url)
    assert started.returncode == 0, started.stderr
    up = json.loads(started.stdout)
    try:
        assert up["container"] == "idle-accel-worker" and up["sensor_pid"] > 0

        with redis_on_loopback.client() as client:  # the worker in the container reports
            deadline = time.monotonic() + 90
            while not list(client.scan_iter(keys.worker("*"))) and time.monotonic() < deadline:
                time.sleep(0.5)
            reports = [json.loads(client.get(key)) for key in client.scan_iter(keys.worker("*"))]
        assert reports, engine.docker("logs", "idle-accel-worker", check=False).stderr[-3000:]
        assert reports[0]["concurrency"] == 1

        shown = volunteer(engine, sensor_dir, "status", "--json")
        status = json.loads(shown.stdout)
        assert status["container"] == "running" and status["sensor_pid"] == up["sensor_pid"]
        assert status["sensor_file"].startswith(('{"state":"idle"', '{"state":"busy"'))

        inspected = json.loads(engine.docker("inspect", "idle-accel-worker").stdout)[0]
        config = inspected["HostConfig"]
        assert config["ReadonlyRootfs"] and config["CapDrop"] == ["ALL"]
        assert config["SecurityOpt"] == ["no-new-privileges:true"]
        assert config["NanoCpus"] == 10**9 and config["Memory"] == 2**30
        assert inspected["Config"]["User"] == "10001:10001"
        pid_status = Path(f"/proc/{inspected['State']['Pid']}/status").read_text()
        assert "\nUid:\t10001\t" in pid_status and "\nNoNewPrivs:\t1" in pid_status
    finally:
        stopped = volunteer(engine, sensor_dir, "down")
    assert json.loads(stopped.stdout) == {"container_stopped": True, "sensor_stopped": True}
    after = json.loads(volunteer(engine, sensor_dir, "status", "--json").stdout)
    assert after["container"] == "absent" and after["sensor_pid"] is None


def test_up_with_gpus_on_a_machine_without_one_says_so_and_leaves_nothing_running(
        engine, tmp_path) -> None:
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA GPU")
    sensor_dir = tmp_path / "sensor"
    started = volunteer(engine, sensor_dir, "up", "--image", WORKER_IMAGE, "--gpus")
    assert started.returncode != 0
    assert "no NVIDIA container runtime" in started.stderr, started.stderr
    status = json.loads(volunteer(engine, sensor_dir, "status", "--json").stdout)
    assert status["container"] == "absent" and status["sensor_pid"] is None
