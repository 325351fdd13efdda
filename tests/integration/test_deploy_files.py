"""Shipped deployment files: valid, credentials mandatory, locked down, non-root.

Fast checks without a Docker engine (``tests/containers/`` runs the real
thing): the compose file offline with ``docker-compose config`` (every
profile), the Dockerfiles with hadolint, the Redis service's script and the
coordinator's healthcheck as plain processes; the host sensor units are
parsed and their command run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from compute import keys
from worker.local.redis_server import find_binary, free_port

from .tools import require
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    return require(name)


PROFILES = ("gpu", "dedicated", "sensor")
VOLUNTEER_URL = "redis://vol-lab:pw-v@redis:6379/0"  # as `idle-accel volunteer enroll lab` prints
# Redis refuses passwords under 16 characters (and the change-me placeholders).
PW_A, PW_T, PW_C = "pw-a-0123456789abcdef", "pw-t-0123456789abcdef", "pw-c-0123456789abcdef"
SECRET_FILES = {"redis_admin_password": PW_A, "redis_team_password": PW_T,
                "redis_coordinator_password": PW_C, "flower_password": "pw-f-0123456789abcdef",
                "volunteer_broker_url": VOLUNTEER_URL}
EXAMPLE = (ROOT / ".env.example").read_text()
#: The services each secret file is mounted into (compose secrets), and no other.
HOLDERS = {"redis_admin_password": {"redis"},
           "redis_team_password": {"redis", "flower", "metrics", "worker-dedicated"},
           "redis_coordinator_password": {"redis", "coordinator"},
           "flower_password": {"flower"}, "volunteer_broker_url": {"worker", "worker-gpu"}}


def write_secrets(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in SECRET_FILES.items():
        (folder / name).write_text(text + "\n")
    return folder


def compose_config(tmp_path: Path, env_text: str, *profiles: str
                   ) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    write_secrets(tmp_path / "secrets")
    (tmp_path / ".env").write_text(env_text)
    clean_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run([tool("docker-compose"), *flags, "config"], cwd=tmp_path,
                          env=clean_env, capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid_with_the_example_env(tmp_path):
    done = compose_config(tmp_path, EXAMPLE)

    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"redis", "coordinator", "flower", "metrics", "worker"}
    # The volunteer's URL is a file of the secrets folder, written after enrolling.
    assert services["worker"]["environment"]["CELERY_BROKER_URL_FILE"] == \
        "/run/secrets/volunteer_broker_url"


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_is_valid_and_adds_its_service(tmp_path, profile):
    done = compose_config(tmp_path, EXAMPLE, profile)

    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    added = {"gpu": "worker-gpu", "dedicated": "worker-dedicated", "sensor": "sensor"}[profile]
    assert services[added]["profiles"] == [profile]  # only started when asked for
    if profile == "gpu":
        devices = services[added]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    if profile == "dedicated":
        assert services[added]["command"][:3] == ["worker", "--mode", "dedicated"]
        # the team's own machine: the team's user, its queues directly
        environment = services[added]["environment"]
        assert environment["CELERY_BROKER_URL"] == "redis://team@redis:6379/0"
        assert environment["IDLE_ACCEL_BROKER_PASSWORD_FILE"] == "/run/secrets/redis_team_password"
    if profile == "sensor":
        assert services[added]["pid"] == "host"
        assert services[added]["entrypoint"][:2] == ["idle-accel", "sensor"]
        assert services[added]["read_only"] is True and services[added]["cap_drop"] == ["ALL"]


def test_every_service_of_the_image_is_locked_down_and_bound_to_localhost(tmp_path):
    done = compose_config(tmp_path, EXAMPLE, *PROFILES)
    services = yaml.safe_load(done.stdout)["services"]

    ours = {name: service for name, service in services.items()
            if service.get("image") == "idle-accelerator:local"}
    assert set(ours) == {"coordinator", "flower", "metrics", "worker", "worker-gpu",
                         "worker-dedicated", "sensor"}
    for name, service in ours.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service, name  # the image's fixed non-root UID
        assert service["restart"] == "unless-stopped", name
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip')}:"
            assert published.startswith("127.0.0.1:"), (name, port)
    for name in ("worker", "worker-gpu", "worker-dedicated"):
        assert "cpus" in services[name] and "mem_limit" in services[name], name


def test_compose_refuses_to_start_without_flowers_login(tmp_path):
    done = compose_config(tmp_path, "")

    assert done.returncode != 0
    assert "set FLOWER_USER in .env" in done.stderr


def test_no_password_is_in_the_configuration_and_each_secret_reaches_only_its_role(tmp_path):
    done = compose_config(tmp_path, EXAMPLE, *PROFILES)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]

    for text in SECRET_FILES.values():  # neither in environments, commands nor healthchecks
        assert text not in done.stdout
    variables = {key for service in services.values() for key in service.get("environment", {})}
    assert not {key for key in variables if key.endswith(("PASSWORD", "BASIC_AUTH"))}
    for secret, holders in HOLDERS.items():
        found = {name for name, service in services.items()
                 if secret in [s if isinstance(s, str) else s["source"]
                               for s in service.get("secrets", [])]}
        assert found == holders, secret
        assert config["secrets"][secret]["file"] == str(tmp_path / "secrets" / secret)


def test_the_coordinator_is_locked_down_as_the_other_services(tmp_path):
    done = compose_config(tmp_path, EXAMPLE)
    services = yaml.safe_load(done.stdout)["services"]
    coordinator, flower = services["coordinator"], services["flower"]

    assert coordinator["image"] == flower["image"] == "idle-accelerator:local"
    assert [*coordinator["entrypoint"], *coordinator["command"]] == ["idle-accel", "coordinator"]
    assert coordinator["environment"]["CELERY_BROKER_URL"] == "redis://coordinator@redis:6379/0"
    assert coordinator["environment"]["IDLE_ACCEL_BROKER_PASSWORD_FILE"] == \
        "/run/secrets/redis_coordinator_password"
    for key in ("read_only", "cap_drop", "security_opt", "tmpfs", "restart", "depends_on"):
        assert coordinator[key] == flower[key], key
    assert "user" not in coordinator and "ports" not in coordinator
    assert coordinator["depends_on"]["redis"]["condition"] == "service_healthy"
    test = coordinator["healthcheck"]["test"]
    assert test[0] == "CMD" and not any(pw in " ".join(test) for pw in SECRET_FILES.values())


def test_redis_is_capped(tmp_path):
    done = compose_config(tmp_path, EXAMPLE)
    redis_service = yaml.safe_load(done.stdout)["services"]["redis"]
    script = redis_service["command"][0]

    assert '--maxmemory "$$REDIS_MAXMEMORY"' in script
    assert "--maxmemory-policy noeviction" in script
    assert "--proto-max-bulk-len 16mb" in script
    assert redis_service["environment"]["REDIS_MAXMEMORY"] == "1gb"
    bigger = compose_config(tmp_path, EXAMPLE + "REDIS_MAXMEMORY=4gb\n")
    assert yaml.safe_load(bigger.stdout)["services"]["redis"]["environment"][
        "REDIS_MAXMEMORY"] == "4gb"


def test_compose_services_carry_credentials_and_are_locked_down(tmp_path):
    done = compose_config(tmp_path, EXAMPLE)
    services = yaml.safe_load(done.stdout)["services"]

    redis, flower, worker = services["redis"], services["flower"], services["worker"]
    script = redis["command"][0]
    assert "--aclfile /tmp/users.acl" in script
    assert any(str(v).endswith(":/etc/redis/users.acl.in:ro") for v in redis["volumes"])
    assert "volunteer_broker_url" not in redis["secrets"]  # no shared volunteer user
    assert flower["environment"]["FLOWER_USER"] == "admin"
    assert "FLOWER_BASIC_AUTH" not in flower["environment"]  # made from the file at start
    assert "/run/secrets/flower_password" in " ".join(flower["entrypoint"])
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])
    assert flower["environment"]["CELERY_BROKER_URL"] == "redis://team@redis:6379/0"
    assert "CELERY_BROKER_URL" not in worker["environment"]
    assert worker["read_only"] is True
    assert worker["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in worker["security_opt"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "file:/run/idle-accel/state" in worker["command"]  # the host's sensor file
    assert any(str(volume).endswith(":/run/idle-accel:ro") or
               (isinstance(volume, dict) and volume.get("target") == "/run/idle-accel"
                and volume.get("read_only")) for volume in worker["volumes"])


@pytest.mark.parametrize("name", ["worker.Dockerfile", "redis.Dockerfile"])
def test_dockerfile_passes_hadolint_and_runs_as_a_fixed_non_root_user(name):
    dockerfile = ROOT / "deploy" / name
    done = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    users = [line.split()[1] for line in dockerfile.read_text().splitlines()
             if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit()
    if name == "worker.Dockerfile":
        assert "PYTHONUNBUFFERED=1" in dockerfile.read_text()


def test_the_compose_redis_script_starts_redis_with_one_login_per_role(tmp_path):
    """Run the redis service's own script (with the local redis-server), log in as each role,
    read its caps, and run the coordinator's healthcheck against it."""
    from .test_redis_acl import require_redis_7

    require_redis_7()
    services, script, env, rendered, port = _redis_script(tmp_path)
    process = subprocess.Popen(["/bin/sh", "-euc", script], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def login(user: str, password: str) -> bool:
            with redis.Redis(port=port, username=user, password=password,
                             socket_timeout=5) as client:
                return client.ping()

        assert wait_for(lambda: _quiet(login, "admin", PW_A), timeout=15, what="redis up")
        assert login("team", PW_T) and login("coordinator", PW_C)
        for user, password in (("coordinator", PW_T), ("team", PW_C), ("volunteer", "pw-v"),
                               ("default", ""), ("default", PW_A)):
            with pytest.raises(redis.AuthenticationError):
                login(user, password)
        text = rendered.read_text()
        assert "#" not in text.split("admin on ", 1)[0]  # comments dropped
        assert not any(password in text for password in SECRET_FILES.values())
        assert rendered.stat().st_mode & 0o077 == 0  # umask 077
        with redis.Redis(port=port, username="admin", password=PW_A) as admin:
            assert admin.config_get("maxmemory") == {"maxmemory": str(1024 ** 3)}
            assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
            assert admin.config_get("proto-max-bulk-len")["proto-max-bulk-len"] == \
                str(16 * 1024 ** 2)

            # The coordinator's healthcheck, as Docker runs it in its container.
            check = services["coordinator"]["healthcheck"]["test"]
            assert check[:2] == ["CMD", "python"]
            url = services["coordinator"]["environment"]["CELERY_BROKER_URL"]
            env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
                   "CELERY_BROKER_URL": url.replace("@redis:6379", f"@127.0.0.1:{port}"),
                   "IDLE_ACCEL_BROKER_PASSWORD_FILE": str(
                       tmp_path / "secrets" / "redis_coordinator_password")}

            def healthy() -> bool:
                return subprocess.run([sys.executable, *check[2:]], env=env, timeout=30,
                                      capture_output=True).returncode == 0

            assert not healthy()  # no coordinator holds the lock
            admin.set(keys.COORDINATOR_LOCK, "token", px=10_000)
            assert healthy()
    finally:
        process.terminate()
        process.wait(10)


def _redis_script(tmp_path: Path):
    """The redis service's script, set to run here: its files in ``tmp_path``, a free port."""
    done = compose_config(tmp_path, EXAMPLE)
    services = yaml.safe_load(done.stdout)["services"]
    service = services["redis"]
    rendered = tmp_path / "users.acl"
    port = free_port()
    script = (service["command"][0].replace("$$", "$")
              .replace("/etc/redis/users.acl.in", str(ROOT / "deploy" / "redis" / "users.acl"))
              .replace("/tmp/users.acl", str(rendered))
              .replace("--dir /data", f"--dir {tmp_path}")
              .replace("exec redis-server",
                       f"exec {find_binary()} --port {port} --bind 127.0.0.1"))
    env = {"PATH": os.environ["PATH"], "SECRETS_DIR": str(tmp_path / "secrets"),
           **{k: str(v) for k, v in service["environment"].items()}}
    return services, script, env, rendered, port


@pytest.mark.parametrize(("password", "said"), [
    ("change-me-admin", "is a placeholder (change-me-...)"),
    ("short-password", "is missing or shorter than 16 characters"),
    (None, "is missing or shorter than 16 characters")])
def test_the_redis_script_refuses_a_missing_short_or_placeholder_password(
        tmp_path, password, said):
    _, script, env, rendered, _ = _redis_script(tmp_path)
    secret = tmp_path / "secrets" / "redis_admin_password"
    if password is None:
        secret.unlink()
    else:
        secret.write_text(password + "\n")
    done = subprocess.run(["/bin/sh", "-euc", script], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert f"{secret} {said}" in done.stderr
    assert not rendered.exists()  # Redis never started


def _quiet(call, *args):
    try:
        return call(*args)
    except redis.RedisError:
        return False
