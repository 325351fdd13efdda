"""Shipped deployment files: valid, credentials mandatory, locked down, non-root.

No Docker engine runs here, so the compose file is checked offline with
``docker-compose config`` and the Dockerfile with hadolint; the container's
entrypoint (``idle-accel worker``) is exercised as a plain process elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing: .ci/run installs it")
    pytest.skip(f"{name} is not installed on this machine (.ci/run installs it)")


def compose_config(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(env_text)
    clean_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run([tool("docker-compose"), "config"], cwd=tmp_path, env=clean_env,
                          capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_with_the_example_env(tmp_path):
    done = compose_config(tmp_path, (ROOT / ".env.example").read_text())

    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) >= {"redis", "flower", "worker"}


def test_compose_refuses_to_start_without_credentials(tmp_path):
    done = compose_config(tmp_path, "")

    assert done.returncode != 0
    assert "set REDIS_PASSWORD in .env" in done.stderr


def test_compose_services_carry_credentials_and_are_locked_down(tmp_path):
    done = compose_config(tmp_path, "REDIS_PASSWORD=pw-1\nFLOWER_USER=u\nFLOWER_PASSWORD=pw-2\n")
    services = yaml.safe_load(done.stdout)["services"]

    redis, flower, worker = services["redis"], services["flower"], services["worker"]
    assert "--requirepass" in redis["command"] and "pw-1" in redis["command"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "u:pw-2"
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])
    assert worker["environment"]["CELERY_BROKER_URL"] == "redis://:pw-1@redis:6379/0"
    assert worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "file:/run/idle-accel/state" in worker["command"]  # the host's sensor file
    assert any(str(volume).endswith(":/run/idle-accel:ro") or
               (isinstance(volume, dict) and volume.get("target") == "/run/idle-accel"
                and volume.get("read_only")) for volume in worker["volumes"])


def test_dockerfile_passes_hadolint_and_runs_as_a_fixed_non_root_user():
    dockerfile = ROOT / "deploy" / "worker.Dockerfile"
    done = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    users = [line.split()[1] for line in dockerfile.read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit()
    assert "PYTHONUNBUFFERED=1" in dockerfile.read_text()
