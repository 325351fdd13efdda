"""Container harness: a private Docker engine, the project's images, the compose stack.

``engine`` (once per session) starts Debian's ``dockerd`` as root in a folder of
its own (``IDLE_ACCEL_DOCKER_ROOT`` or a pytest temporary folder), builds the
base image from ``debootstrap`` and the worker and Redis images on it, and at
the end removes every container and the engine itself, whatever happened.
Without ``dockerd``/``debootstrap``/root the tests skip; under CI they fail.
``stack`` runs the shipped ``docker-compose.yml`` (with a generated ``.env``
and a small test override, ``override.yml``) as an admin would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gating import Owner
from tests.integration.tools import require
from worker import deploy_secrets
from worker.local import docker_engine
from worker.local.docker_engine import DockerEngine
from worker.local.redis_server import free_port
from worker.local.worker_process import cli_command

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Iterator[DockerEngine]:
    for program in ("dockerd", "docker", "debootstrap"):
        require(program)
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the container tests run dockerd and debootstrap as root")
        pytest.skip("the container tests run dockerd and debootstrap as root")
    root = Path(os.environ.get("IDLE_ACCEL_DOCKER_ROOT") or tmp_path_factory.mktemp("docker"))
    found = DockerEngine(root / "engine")
    try:
        found.start()
        docker_engine.build_images(found)
        print("\nimages built (seconds):", json.dumps(found.timings))
        yield found
    finally:
        found.stop()


class Stack:
    """One compose project of the shipped file, on ``engine``."""

    def __init__(self, engine: DockerEngine, folder: Path) -> None:
        self.engine, self.folder = engine, folder
        self.project = f"ia{secrets.token_hex(3)}"
        self.sensor_dir = folder / "sensor"
        self.sensor_dir.mkdir(parents=True)
        self.sensor_dir.chmod(0o755)  # read by the worker's user (10001) in its container
        self.owner = Owner.away(self.sensor_dir / "state")
        self.redis_port, self.flower_port, self.metrics_port = (free_port() for _ in range(3))
        # As docs/admin.md says: `idle-accel secrets init` makes the password files.
        self.secrets = folder / "secrets"
        made = subprocess.run([*cli_command(), "secrets", "init", "--dir", str(self.secrets)],
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        self.passwords = {role: (self.secrets / f"redis_{role}_password").read_text().strip()
                          for role in ("admin", "team", "coordinator")}
        self.env_file = folder / ".env"
        self.write_env()
        self._fresh = threading.Event()
        self._keeper = threading.Thread(target=self._keep_sensor_fresh, daemon=True)
        self._keeper.start()
        self.owner_busy = False

    def write_env(self, **more: str) -> None:
        values = {
            "IDLE_ACCEL_SECRETS": str(self.secrets), "FLOWER_USER": "admin",
            "FLOWER_PORT": str(self.flower_port), "METRICS_PORT": str(self.metrics_port),
            "IDLE_ACCEL_SENSOR_DIR": str(self.sensor_dir), "IDLE_ACCEL_CONCURRENCY": "1",
            "IDLE_ACCEL_IDLE_AFTER": "1",
            "WORKER_CPUS": "1", "WORKER_MEMORY": "1g", "REDIS_MAXMEMORY": "256mb",
            "TEST_REDIS_PORT": str(self.redis_port),
        }
        current = self.read_env() if self.env_file.exists() else {}
        current.update(values)
        current.update(more)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in current.items()))

    def read_env(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.env_file.read_text().splitlines()
                    if "=" in line)

    def _keep_sensor_fresh(self) -> None:
        """The host sensor's part: rewrite the owner's state every second (stale = busy)."""
        while not self._fresh.wait(1.0):
            self.owner.busy() if self.owner_busy else self.owner.idle()

    def compose(self, *args: str, check: bool = True, timeout: float = 300,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [shutil.which("docker-compose") or "docker-compose", "-p", self.project,
                   "--project-directory", str(REPO), "--env-file", str(self.env_file),
                   "-f", str(REPO / "docker-compose.yml"), "-f", str(HERE / "override.yml"),
                   *args]
        done = subprocess.run(command, env={**self.engine.env, **(env or {})},
                              capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n"
                                 f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done

    def container(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's first container."""
        found = self.compose("ps", "-q", service).stdout.split()
        assert found, f"no container of {service}"
        return json.loads(self.engine.docker("inspect", found[0]).stdout)[0]

    def health(self, service: str) -> str:
        state = self.container(service)["State"]
        return state.get("Health", {}).get("Status") or state["Status"]

    def wait_healthy(self, *services: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {service: self.health(service) for service in services}
            if all(state == "healthy" for state in states.values()):
                return
            time.sleep(1)
        logs = self.compose("logs", "--tail", "40", *services, check=False).stdout
        raise AssertionError(f"not healthy after {timeout}s: {states}\n{logs[-6000:]}")

    def logs(self, *services: str, tail: int = 60) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), *services,
                            check=False).stdout[-8000:]

    def result(self, result: Any, timeout: float) -> Any:
        """``result.get()``, with the logs of the worker and coordinator when it times out."""
        try:
            return result.get(timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"{result.id}: {exc!r}\n{self.logs('worker', 'coordinator')}"
                                 ) from exc

    def write_secret(self, name: str, text: str) -> None:
        deploy_secrets.write(self.secrets / name, text)

    def url(self, role: str) -> str:
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{self.redis_port}/0"

    def stop(self) -> None:
        self._fresh.set()
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=180)


@pytest.fixture(scope="module")
def stack(engine: DockerEngine, tmp_path_factory) -> Iterator[Stack]:
    found = Stack(engine, tmp_path_factory.mktemp("stack"))
    try:
        yield found
    finally:
        found.stop()
