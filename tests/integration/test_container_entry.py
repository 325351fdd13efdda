"""The image's ENTRYPOINT and HEALTHCHECK, and the host sensor units, run as plain processes.

No Docker engine runs here: the commands are read out of the shipped files
and run with the container's environment, paths moved to a temporary folder.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from configparser import ConfigParser
from pathlib import Path

import pytest

from worker.idle import hostfile
from worker.local.process import ManagedProcess
from worker.local.worker_process import cli_command
from worker.metrics import HELP

from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "worker.Dockerfile").read_text()
SENSOR_PATH = "/run/idle-accel/state"


def instruction(name: str) -> list[str]:
    """The JSON (exec form) arguments of the last ``name`` instruction, continuations joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return json.loads(lines[-1].split("CMD ", 1)[1] if name == "HEALTHCHECK"
                      else lines[-1][len(name) + 1:])


def local(argv: list[str], sensor: Path) -> list[str]:
    """A container command as it runs here: our idle-accel, the sensor file moved."""
    assert argv[0] == "idle-accel"
    return [*cli_command(), *(arg.replace(SENSOR_PATH, str(sensor)) for arg in argv[1:])]


def test_the_entrypoint_runs_a_gated_worker_and_the_healthcheck_sees_it(
        app, broker_env, tmp_path):
    entry, health = instruction("ENTRYPOINT"), instruction("HEALTHCHECK")
    assert entry == ["idle-accel", "worker", "--sensor", f"file:{SENSOR_PATH}"]
    assert health[:2] == ["idle-accel", "ping"]
    sensor = tmp_path / "state"
    hostfile.write(sensor, {"state": "idle", "at": time.time()})
    env = {**broker_env, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "IDLE_ACCEL_NAME": "container@%h", "IDLE_ACCEL_CONCURRENCY": "1",
           "IDLE_ACCEL_IDLE_AFTER": "0", "IDLE_ACCEL_SENSOR_MAX_AGE": "0"}  # a file written once
    run_env = {**os.environ, **env}

    down = subprocess.run(local(health, sensor), env=run_env, capture_output=True, text=True,
                          timeout=60)
    worker = ManagedProcess(local(entry, sensor), env=env,
                            log_path=tmp_path / "entry.log").start()
    def healthcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(local(health, sensor), env=run_env, capture_output=True,
                              text=True, timeout=60)

    try:
        up = wait_for(lambda: (lambda done: done.returncode == 0 and done)(healthcheck()),
                      timeout=60, what="healthy")
        result = app.signature("compute.diag.noop").delay().get(timeout=30)
        asked = subprocess.run([*cli_command(), "ping"], env=run_env, capture_output=True,
                               text=True, timeout=60)  # through remote control, as the team
    finally:
        worker.stop()

    assert "--from-status" in health  # volunteers may not broadcast (deploy/redis/users.acl)
    assert down.returncode == 1 and "no status report" in down.stderr
    assert "reporting" in up.stdout
    assert asked.returncode == 0 and "pong" in asked.stdout
    assert result["hostname"].startswith("container@")


def test_the_systemd_unit_runs_the_sensor_into_the_shared_file(tmp_path):
    unit = ConfigParser(interpolation=None, strict=False)
    unit.read(ROOT / "deploy" / "host" / "idle-accel-sensor.service")
    argv = shlex.split(unit["Service"]["ExecStart"])

    assert Path(argv[0]).name == "idle-accel" and argv[1:3] == ["sensor", "--out"]
    assert unit["Install"]["WantedBy"] == "graphical-session.target"  # the owner's session
    out = tmp_path / "state"
    sensor = ManagedProcess([*cli_command(), *argv[1:3], str(out)], env={},
                            log_path=tmp_path / "sensor.log").start()
    try:
        document = wait_for(lambda: out.exists() and json.loads(out.read_text()), timeout=30,
                            what="sensor file")
    finally:
        sensor.stop()
    assert document["state"] in ("idle", "busy") and "signals" in document


def test_the_launchd_agent_and_the_windows_task_start_the_same_sensor():
    agent = plistlib.loads((ROOT / "deploy" / "host" /
                            "org.idle-accelerator.sensor.plist").read_bytes())
    task = ET.parse(ROOT / "deploy" / "host" / "idle-accel-sensor.xml").getroot()  # noqa: S314
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}

    assert agent["ProgramArguments"][1:3] == ["sensor", "--out"]
    assert agent["RunAtLoad"] and agent["LimitLoadToSessionType"] == "Aqua"
    assert task.find("t:Actions/t:Exec/t:Arguments", ns).text.startswith("sensor --out ")
    assert task.find("t:Principals/t:Principal/t:LogonType", ns).text == "InteractiveToken"


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "idle-accelerator.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    names = set(re.findall(r"\b(idle_accel_[a-z_]+|flower_[a-z_]+)\b", " ".join(exprs)))

    assert {name for name in names if name.startswith("idle_accel_")} <= set(HELP)
    assert {name for name in names if name.startswith("flower_")} <= {
        "flower_events_total", "flower_worker_online"}  # checked live in test_flower
    assert len(dashboard["panels"]) >= 8


@pytest.fixture
def exporter(broker_env, tmp_path):
    from worker.local.redis_server import free_port

    port = free_port()
    process = ManagedProcess([*cli_command(), "metrics", "--port", str(port)], env=broker_env,
                             log_path=tmp_path / "metrics.log").start()
    yield f"http://127.0.0.1:{port}/metrics"
    process.stop()


def test_the_metrics_endpoint_shows_owner_state_consumption_and_queues(
        app, workers, exporter, tmp_path):
    import urllib.request

    owner = tmp_path / "owner"
    hostfile.write(owner, {"state": "busy", "at": time.time()})
    busy = workers("metrics-a", "--concurrency", "1", "--sensor", f"file:{owner}",
                   "--sensor-max-age", "0")
    app.signature("compute.diag.noop").apply_async(queue="emergency")

    def scrape() -> str:
        try:
            with urllib.request.urlopen(exporter, timeout=5) as response:  # noqa: S310
                return response.read().decode()
        except OSError:
            return ""

    text = wait_for(lambda: busy.node in scrape() and scrape(), timeout=30, what="scrape")

    node = f'node="{busy.node}"'
    assert f'idle_accel_worker_owner_state{{{node},state="busy"}} 1' in text
    assert f"idle_accel_worker_consuming{{{node}}} 0" in text
    assert f'idle_accel_worker_reason{{{node},code="host_busy"}} 1' in text
    assert 'idle_accel_workers{mode="volunteer",state="busy"} 1' in text
    assert 'idle_accel_queue_length{queue="emergency"} 1' in text
    assert "# TYPE idle_accel_worker_up gauge" in text


def test_volunteer_up_without_a_docker_engine_says_so_and_starts_nothing(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}

    done = subprocess.run([*cli_command(), "volunteer", "up", "--sensor-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "no Docker engine reachable" in done.stderr
    assert not (tmp_path / "sensor.pid").exists()  # the sensor was not left running
