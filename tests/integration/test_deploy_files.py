"""Shipped deployment files: valid, credentials mandatory, locked down, non-root.

No Docker engine runs here, so the compose file is checked offline with
``docker-compose config`` (every profile) and the Dockerfile with hadolint;
the container's entrypoint and healthcheck run as plain processes; the host
sensor units are parsed and their command run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from worker.local.redis_server import find_binary, free_port

from .tools import require
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    return require(name)


PROFILES = ("gpu", "dedicated", "sensor")
SECRETS = ("REDIS_ADMIN_PASSWORD=pw-a\nREDIS_TEAM_PASSWORD=pw-t\nREDIS_VOLUNTEER_PASSWORD=pw-v\n"
           "FLOWER_USER=u\nFLOWER_PASSWORD=pw-2\n")


def compose_config(tmp_path: Path, env_text: str, *profiles: str
                   ) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text(env_text)
    clean_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run([tool("docker-compose"), *flags, "config"], cwd=tmp_path,
                          env=clean_env, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_with_the_example_env(tmp_path):
    done = compose_config(tmp_path, (ROOT / ".env.example").read_text())

    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"redis", "flower", "metrics", "worker"}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_is_valid_and_adds_its_service(tmp_path, profile):
    done = compose_config(tmp_path, (ROOT / ".env.example").read_text(), profile)

    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    added = {"gpu": "worker-gpu", "dedicated": "worker-dedicated", "sensor": "sensor"}[profile]
    assert services[added]["profiles"] == [profile]  # only started when asked for
    if profile == "gpu":
        devices = services[added]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    if profile == "dedicated":
        assert services[added]["command"][:3] == ["worker", "--mode", "dedicated"]
    if profile == "sensor":
        assert services[added]["pid"] == "host"
        assert services[added]["entrypoint"][:2] == ["idle-accel", "sensor"]
        assert services[added]["read_only"] is True and services[added]["cap_drop"] == ["ALL"]


def test_every_service_of_the_image_is_locked_down_and_bound_to_localhost(tmp_path):
    done = compose_config(tmp_path, SECRETS, *PROFILES)
    services = yaml.safe_load(done.stdout)["services"]

    ours = {name: service for name, service in services.items()
            if service.get("image") == "idle-accelerator:local"}
    assert set(ours) == {"flower", "metrics", "worker", "worker-gpu", "worker-dedicated",
                         "sensor"}
    for name, service in ours.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service, name  # the image's fixed non-root UID
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip')}:"
            assert published.startswith("127.0.0.1:"), (name, port)
    for name in ("worker", "worker-gpu", "worker-dedicated"):
        assert "cpus" in services[name] and "mem_limit" in services[name], name


def test_compose_refuses_to_start_without_credentials(tmp_path):
    done = compose_config(tmp_path, "")

    assert done.returncode != 0
    assert "set REDIS_ADMIN_PASSWORD in .env" in done.stderr


def test_compose_services_carry_credentials_and_are_locked_down(tmp_path):
    done = compose_config(tmp_path, SECRETS)
    services = yaml.safe_load(done.stdout)["services"]

    redis, flower, worker = services["redis"], services["flower"], services["worker"]
    script = redis["command"][0]
    assert "--aclfile /tmp/users.acl" in script
    assert not any(pw in script for pw in ("pw-a", "pw-t", "pw-v"))  # from the environment
    assert any(str(v).endswith(":/etc/redis/users.acl.in:ro") for v in redis["volumes"])
    assert redis["environment"]["REDIS_VOLUNTEER_PASSWORD"] == "pw-v"
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "u:pw-2"
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])
    assert flower["environment"]["CELERY_BROKER_URL"] == "redis://team:pw-t@redis:6379/0"
    assert worker["environment"]["CELERY_BROKER_URL"] == "redis://volunteer:pw-v@redis:6379/0"
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


def test_the_compose_redis_script_starts_redis_with_one_login_per_role(tmp_path):
    """Run the redis service's own script (with the local redis-server) and log in as each role."""
    from .test_redis_acl import require_redis_7

    require_redis_7()
    done = compose_config(tmp_path, SECRETS)
    service = yaml.safe_load(done.stdout)["services"]["redis"]
    rendered = tmp_path / "users.acl"
    port = free_port()
    script = (service["command"][0].replace("$$", "$")
              .replace("/etc/redis/users.acl.in", str(ROOT / "deploy" / "redis" / "users.acl"))
              .replace("/tmp/users.acl", str(rendered))
              .replace("chown redis:redis", "test -f")
              .replace("exec docker-entrypoint.sh redis-server",
                       f"exec {find_binary()} --port {port} --bind 127.0.0.1 --dir {tmp_path}"))
    env = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in service["environment"].items()}}
    process = subprocess.Popen(["/bin/sh", "-euc", script], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def login(user: str, password: str) -> bool:
            with redis.Redis(port=port, username=user, password=password,
                             socket_timeout=5) as client:
                return client.ping()

        assert wait_for(lambda: _quiet(login, "admin", "pw-a"), timeout=15, what="redis up")
        assert login("team", "pw-t") and login("volunteer", "pw-v")
        for user, password in (("volunteer", "pw-t"), ("team", "pw-v"), ("default", "")):
            with pytest.raises(redis.AuthenticationError):
                login(user, password)
        text = rendered.read_text()
        assert "#" not in text.split("admin on ", 1)[0]  # comments dropped
        assert not any(password in text for password in ("pw-a", "pw-t", "pw-v"))
        assert rendered.stat().st_mode & 0o077 == 0  # umask 077
    finally:
        process.terminate()
        process.wait(10)


def _quiet(call, *args):
    try:
        return call(*args)
    except redis.RedisError:
        return False
