"""The `idle-accel` command and plain `celery -A compute.app` as users run them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from worker.local.worker_process import WorkerProcess, cli_command

SECRET = "s3cret-pa55"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([*cli_command(), *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [
    [], ["worker"], ["config"], ["demo"], ["sensor"], ["fleet"], ["fleet", "status"],
    ["submit"], ["submit", "render"], ["submit", "embed"], ["submit", "search"],
    ["submit", "aggregate"], ["job", "status"], ["metrics"], ["ping"], ["volunteer", "up"],
    ["volunteer", "down"], ["volunteer", "status"]])
def test_every_command_has_help(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: idle-accel" in done.stdout


@pytest.mark.parametrize("url", [f"http://admin:{SECRET}@example.org/", "sqs://", "memory://",
                                 f"redis+socket://:{SECRET}@/tmp/r.sock", "localhost:6379"])
def test_worker_refuses_a_broker_that_is_not_redis_or_amqp(url):
    done = run_cli("worker", "--name", "refused", env={"CELERY_BROKER_URL": url}, timeout=30)

    assert done.returncode == 2
    assert "CELERY_BROKER_URL: must start with one of redis://, rediss://, amqp://" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_worker_refuses_bad_flags_naming_the_setting():
    done = run_cli("worker", "--queues", "cpu,Bad Queue!", "--concurrency", "0", timeout=30)

    assert done.returncode == 2
    assert "IDLE_ACCEL_QUEUES: " in done.stderr and "'Bad Queue!'" in done.stderr
    assert "IDLE_ACCEL_CONCURRENCY: " in done.stderr


def test_config_shows_settings_without_the_password():
    url = f"redis://:{SECRET}@10.1.2.3:6379/0"
    done = run_cli("config", env={"CELERY_BROKER_URL": url, "IDLE_ACCEL_QUEUES": "cpu, gpu"})

    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    assert "IDLE_ACCEL_QUEUES" in done.stdout and "cpu,gpu" in done.stdout
    assert "not encrypted" in done.stdout  # plain redis:// to another host is flagged


def test_plain_celery_cli_runs_the_app_unchanged(app, broker_env, tmp_path):
    celery = [sys.executable, "-m", "celery", "-A", "compute.app"]
    plain = WorkerProcess("plain", env=broker_env, log_path=tmp_path / "plain.log")
    plain.argv = [*celery, "worker", "-Q", "cpu", "-c", "1", "-n", plain.node]
    plain.start()
    try:
        plain.wait_ready(app)
        result = app.signature("compute.diag.noop").delay().get(timeout=30)
        inspect = subprocess.run([*celery, "inspect", "ping", "-d", plain.node],
                                 env={**os.environ, **broker_env}, capture_output=True,
                                 text=True, timeout=60)
    finally:
        assert plain.stop() == 0
    assert result == {"hostname": plain.node}
    assert inspect.returncode == 0 and "pong" in inspect.stdout


def test_plain_celery_cli_refuses_a_bad_broker_with_the_same_message():
    env = {**os.environ, "CELERY_BROKER_URL": "sqs://"}
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "compute.app", "inspect", "ping"],
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert "CELERY_BROKER_URL: must start with one of redis://" in done.stderr


def test_a_team_task_module_is_served_with_include(app, workers, tmp_path):
    (tmp_path / "team_tasks.py").write_text(textwrap.dedent('''
        from celery import shared_task

        @shared_task(name="team.double")
        def double(x: int) -> int:
            return 2 * x
    '''))
    workers("team", "--include", "team_tasks", env={"PYTHONPATH": str(tmp_path)})

    assert app.send_task("team.double", args=[21], queue="cpu").get(timeout=30) == 42
