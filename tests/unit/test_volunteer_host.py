"""`idle-accel volunteer`: the container it asks Docker for, against a fake Docker client."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from compute.hostid import machine_host_id
from worker import volunteer_host as host


class FakeContainers:
    def __init__(self) -> None:
        self.runs: list[dict] = []
        self.stopped: list[str] = []

    def get(self, name):
        if not self.runs:
            raise LookupError(name)
        containers = self

        class Container:
            status = "running"

            def stop(self, timeout):
                containers.stopped.append(name)

            def remove(self, force=False):
                return None

        return Container()

    def run(self, **spec):
        self.runs.append(spec)
        return type("C", (), {"name": spec["name"]})()


class FakeDocker:
    def __init__(self) -> None:
        self.containers = FakeContainers()


def test_the_container_is_locked_down_like_the_compose_worker(tmp_path):
    spec = host.container_spec(host.Plan(image="img", broker_url="redis://:pw@h:6379/0",
                                         sensor_dir=tmp_path, cpus=1.5, memory="3g",
                                         gpus=True, concurrency=2, region="eu-west"))

    assert spec["read_only"] is True and spec["cap_drop"] == ["ALL"]
    assert spec["security_opt"] == ["no-new-privileges:true"]
    assert spec["volumes"] == {str(tmp_path): {"bind": "/run/idle-accel", "mode": "ro"}}
    assert (spec["nano_cpus"], spec["mem_limit"]) == (1_500_000_000, "3g")
    assert spec["environment"] == {"CELERY_BROKER_URL": "redis://:pw@h:6379/0",
                                   "IDLE_ACCEL_CONCURRENCY": "2",
                                   "IDLE_ACCEL_REGION": "eu-west",
                                   "IDLE_ACCEL_HOST_ID": machine_host_id(),
                                   "IDLE_ACCEL_PREFERENCES": "/run/idle-accel/preferences.toml"}
    assert spec["device_requests"][0]["Capabilities"] == [["gpu"]]
    assert "user" not in spec  # the image's fixed non-root UID


def test_a_given_host_id_wins_over_the_machine_id(tmp_path):
    spec = host.container_spec(host.Plan(image="img", broker_url="redis://h", sensor_dir=tmp_path,
                                         host_id="rack-7"))
    assert spec["environment"]["IDLE_ACCEL_HOST_ID"] == "rack-7"


def test_up_starts_the_sensor_and_the_container_and_down_stops_both(tmp_path):
    docker = FakeDocker()
    fake_sensor = [sys.executable, "-c", "import time, sys; time.sleep(60)", "--"]
    plan = host.Plan(image="img", broker_url="redis://h/0", sensor_dir=tmp_path)

    started = host.up(plan, fake_sensor, client=docker)
    running = host.sensor_pid(tmp_path)
    stopped = host.down(tmp_path, client=docker)
    time.sleep(0.2)

    assert started["container"] == host.CONTAINER and started["sensor_pid"] == running
    assert docker.containers.runs[0]["image"] == "img"
    assert stopped == {"container_stopped": True, "sensor_stopped": True}
    assert host.sensor_pid(tmp_path) is None
    assert not Path(tmp_path / "sensor.pid").exists()
