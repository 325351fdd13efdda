"""The host helper for volunteers who do not write compose files (``idle-accel volunteer``).

``up`` starts the host's owner sensor (``idle-accel sensor --out DIR/state``, a
background process in the owner's session) and the worker container through
the Docker SDK, locked down exactly like the compose file: read-only root,
every capability dropped, no new privileges, CPU and memory limits, the
sensor folder mounted read-only, the GPUs passed through when asked.
``down`` stops both; ``status`` tells what runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.errors import IdleAccelError
from compute.hostid import machine_host_id

CONTAINER = "idle-accel-worker"
LABEL = "org.idle-accelerator.role"


@dataclass(frozen=True)
class Plan:
    image: str
    broker_url: str
    sensor_dir: Path
    cpus: float = 2.0
    memory: str = "2g"
    gpus: bool = False
    concurrency: int | None = None
    region: str | None = None
    name: str = CONTAINER
    host_id: str | None = None
    network: str | None = None  # Docker's network mode; None: the engine's default


def container_spec(plan: Plan) -> dict[str, Any]:
    """Keyword arguments of ``docker.containers.run`` for the worker container."""
    from docker.types import DeviceRequest

    # The machine's identity, read here on the host: every container of this
    # machine counts as one machine for verified results (compute/hostid.py).
    environment = {"CELERY_BROKER_URL": plan.broker_url,
                   "IDLE_ACCEL_HOST_ID": plan.host_id or machine_host_id(),
                   # The host sensor's copy of the volunteer's preferences file.
                   "IDLE_ACCEL_PREFERENCES": "/run/idle-accel/preferences.toml"}
    if plan.concurrency:
        environment["IDLE_ACCEL_CONCURRENCY"] = str(plan.concurrency)
    if plan.region:
        environment["IDLE_ACCEL_REGION"] = plan.region
    spec: dict[str, Any] = {
        "image": plan.image, "name": plan.name, "detach": True,
        "environment": environment,
        "volumes": {str(plan.sensor_dir): {"bind": "/run/idle-accel", "mode": "ro"}},
        "read_only": True, "tmpfs": {"/tmp": ""},  # noqa: S108 - the container's own tmpfs
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "nano_cpus": int(plan.cpus * 1e9), "mem_limit": plan.memory,
        "restart_policy": {"Name": "unless-stopped"},
        "labels": {LABEL: "worker"},
    }
    if plan.gpus:
        spec["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if plan.network:
        spec["network_mode"] = plan.network
    return spec


#: What Docker says when ``--gpus`` meets an engine without a GPU device driver (NVIDIA's
#: container runtime): ``could not select device driver "" with capabilities: [[gpu]]``.
NO_GPU_RUNTIME = "could not select device driver"


def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise IdleAccelError(f"no Docker engine reachable: {exc}") from None
    return client


def _pid_file(sensor_dir: Path) -> Path:
    return sensor_dir / "sensor.pid"


def sensor_pid(sensor_dir: Path) -> int | None:
    """The host sensor's PID when it runs, else None."""
    try:
        pid = int(_pid_file(sensor_dir).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_sensor(sensor_dir: Path, command: list[str]) -> int:
    """Start ``idle-accel sensor --out DIR/state`` in the background (once)."""
    running = sensor_pid(sensor_dir)
    if running:
        return running
    sensor_dir.mkdir(parents=True, exist_ok=True)
    log = (sensor_dir / "sensor.log").open("ab")
    process = subprocess.Popen([*command, "sensor", "--out", str(sensor_dir / "state")],  # noqa: S603
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    _pid_file(sensor_dir).write_text(str(process.pid))
    return process.pid


def stop_sensor(sensor_dir: Path) -> bool:
    pid = sensor_pid(sensor_dir)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _pid_file(sensor_dir).unlink(missing_ok=True)
    return True


def up(plan: Plan, command: list[str], client: Any = None) -> dict[str, Any]:
    """Start the sensor, then the container (replacing a stopped one of the same name)."""
    client = client or docker_client()  # before the sensor: nothing starts without Docker
    pid = start_sensor(plan.sensor_dir, command)
    with contextlib.suppress(Exception):
        old = client.containers.get(plan.name)
        old.remove(force=True)
    try:
        container = client.containers.run(**container_spec(plan))
    except Exception as exc:
        stop_sensor(plan.sensor_dir)  # nothing half-started is left behind
        with contextlib.suppress(Exception):
            client.containers.get(plan.name).remove(force=True)
        if NO_GPU_RUNTIME in str(exc):
            raise IdleAccelError(
                "--gpus: this Docker engine has no NVIDIA container runtime (no GPU, or "
                "nvidia-container-toolkit not installed); start without --gpus to use the "
                "CPU only") from None
        raise IdleAccelError(f"the worker container did not start: {exc}") from None
    return {"container": container.name, "sensor_pid": pid}


def down(sensor_dir: Path, name: str = CONTAINER, client: Any = None) -> dict[str, Any]:
    """Stop the container (its running tasks go back to the queue) and the sensor."""
    client = client or docker_client()
    stopped = False
    with contextlib.suppress(Exception):
        container = client.containers.get(name)
        container.stop(timeout=60)  # SIGTERM: a warm shutdown, suspended tasks requeued
        container.remove()
        stopped = True
    return {"container_stopped": stopped, "sensor_stopped": stop_sensor(sensor_dir)}


def status(sensor_dir: Path, name: str = CONTAINER, client: Any = None) -> dict[str, Any]:
    state = None
    with contextlib.suppress(Exception):
        state = (client or docker_client()).containers.get(name).status
    sensor_file = sensor_dir / "state"
    return {"container": state or "absent", "sensor_pid": sensor_pid(sensor_dir),
            "sensor_file": sensor_file.read_text()[:500] if sensor_file.exists() else None}
