"""The `idle-accel` command and plain `celery -A compute.app` as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import redis

from worker.local.redis_server import free_port
from worker.local.worker_process import WorkerProcess, cli_command

SECRET = "s3cret-pa55"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([*cli_command(), *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [
    [], ["worker"], ["config"], ["demo"], ["sensor"], ["fleet"], ["fleet", "status"],
    ["submit"], ["submit", "render"], ["submit", "embed"], ["submit", "search"],
    ["submit", "aggregate"], ["job", "status"], ["metrics"], ["ping"], ["volunteer", "up"],
    ["volunteer", "down"], ["volunteer", "status"], ["volunteer", "enroll"],
    ["volunteer", "revoke"], ["volunteer", "list"], ["volunteer", "install"],
    ["volunteer", "uninstall"], ["volunteer", "pause"], ["volunteer", "resume"],
    ["volunteer", "snooze"], ["submit", "sql"], ["coordinator"]])
def test_every_command_has_help(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: idle-accel" in done.stdout


def test_worker_help_shows_each_flags_default_and_variable():
    done = run_cli("worker", "--help", env={"COLUMNS": "250"})

    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "Default: 180.0. Env: IDLE_ACCEL_IDLE_AFTER." in text
    assert "Default: off. Env: IDLE_ACCEL_RUN_ON_BATTERY." in text
    flags = [line for line in done.stdout.splitlines() if "--help" not in line]  # typer's own
    assert not [line for line in flags if "<bool>" in line or "<str>" in line]


@pytest.mark.parametrize("url", [f"http://admin:{SECRET}@example.org/", "sqs://", "memory://",
                                 f"redis+socket://:{SECRET}@/tmp/r.sock", "localhost:6379"])
def test_worker_refuses_a_broker_that_is_not_redis_or_amqp(url):
    done = run_cli("worker", "--name", "refused", env={"CELERY_BROKER_URL": url}, timeout=30)

    assert done.returncode == 2
    assert ("CELERY_BROKER_URL: must start with one of redis://, rediss://, sentinel://, "
            "amqp://") in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_worker_refuses_bad_flags_naming_the_setting():
    done = run_cli("worker", "--queues", "cpu,Bad Queue!", "--concurrency", "0", timeout=30)

    assert done.returncode == 2
    assert "IDLE_ACCEL_QUEUES: " in done.stderr and "'Bad Queue!'" in done.stderr
    assert "IDLE_ACCEL_CONCURRENCY: " in done.stderr


@pytest.mark.parametrize("command", [["fleet", "status"], ["fleet", "credits"],
                                     ["volunteer", "list"],
                                     ["submit", "task", "compute.diag.noop"]])
def test_an_unreachable_broker_is_one_line_naming_it_and_the_fix(command):
    port = free_port()
    done = run_cli(*command, env={"CELERY_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:{port}/0"})

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"idle-accel: cannot reach the broker at redis://:**@127.0.0.1:{port}/0")
    assert "Set CELERY_BROKER_URL" in lines[0] and SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_a_wrong_or_missing_password_is_one_line_saying_so(broker, password):
    url = broker.url(0).replace(f":{broker.password}@", f":{password}@" if password else "")
    done = run_cli("fleet", "status", env={"CELERY_BROKER_URL": url})

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot log in to the broker at redis://" in lines[0], done.stderr
    assert "Check the user and password in CELERY_BROKER_URL" in lines[0]
    assert broker.password not in done.stderr


def test_a_worker_with_a_wrong_password_exits_saying_so_an_unreachable_broker_is_awaited(
        broker):
    wrong = broker.url(0).replace(f":{broker.password}@", ":wrong-password@")
    done = run_cli("worker", "--name", "refused", env={"CELERY_BROKER_URL": wrong}, timeout=60)

    assert done.returncode == 2
    assert "cannot log in to the broker at redis://:**@127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr and "wrong-password" not in done.stderr

    port = free_port()  # not up yet: the worker starts and Celery retries until it is
    waiting = subprocess.Popen([*cli_command(), "worker", "--name", "waiting"],
                               env={**os.environ, "CELERY_BROKER_URL":
                                    f"redis://:{SECRET}@127.0.0.1:{port}/0"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=8)
    finally:
        waiting.kill()
        waiting.wait(timeout=30)


def test_fleet_status_names_the_broker_it_asked(broker):
    done = run_cli("fleet", "status", env={"CELERY_BROKER_URL": broker.url(0), "COLUMNS": "200"})

    assert done.returncode == 0, done.stderr
    assert f"0 workers reported to redis://:**@127.0.0.1:{broker.port}/0" in done.stdout
    assert broker.password not in done.stdout


def test_tables_fold_long_cells_on_a_narrow_terminal_rather_than_cut_them(broker):
    """80 columns (a plain terminal, or output piped): no cell ends in an ellipsis."""
    with broker.client() as client:
        client.set("idle-accel:worker:a-volunteer-with-a-long-name@a-long-host-name.example",
                   json.dumps({"node": "a-volunteer-with-a-long-name@a-long-host-name.example",
                               "state": "busy", "mode": "volunteer", "at": 1e12,
                               "reasons": [{"code": "cpu", "message": "others use 42 % CPU"}],
                               "queues": ["cpu"], "consuming": []}), ex=60)
    for command in (["config"], ["fleet", "status"]):
        done = run_cli(*command, env={"CELERY_BROKER_URL": broker.url(0), "COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout, done.stdout
        if command == ["fleet", "status"]:
            assert "1 workers reported" in done.stdout and "% CPU" in done.stdout


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


def test_a_team_task_module_is_served_with_include(app, workers, tmp_path, broker_env):
    (tmp_path / "team_tasks.py").write_text(textwrap.dedent('''
        from celery import shared_task

        @shared_task(name="team.double")
        def double(x: int) -> int:
            return 2 * x
    '''))
    workers("team", "--include", "team_tasks", env={"PYTHONPATH": str(tmp_path)})

    assert app.send_task("team.double", args=[21], queue="cpu").get(timeout=30) == 42

    # The CLI sends it by name, from anywhere, without the team's module on its side.
    done = run_cli("submit", "task", "team.double", "--args", "[4]", "--timeout", "30",
                   env={**broker_env, "IDLE_ACCEL_INCLUDE": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8" in done.stdout.splitlines()[-1]
    assert "sent by name" in done.stdout


def test_submit_with_no_worker_says_the_task_waits_not_that_it_runs(broker_env):
    done = run_cli("submit", "task", "compute.diag.noop", "--timeout", "2",
                   env={**broker_env, "COLUMNS": "200"})

    assert done.returncode == 3
    assert "not started after 2 s: no worker has taken it yet" in done.stdout
    assert "still running" not in done.stdout and "verdict" not in done.stdout


def test_enroll_needs_admin_rights_and_says_so(broker) -> None:
    """Enrolling as a user without ACL rights fails with one clear line, no traceback."""
    with broker.client() as client:
        client.execute_command("ACL", "SETUSER", "plain", "on", f">{SECRET}", "~*", "&*",
                               "+@all", "-@admin", "-@dangerous")
    done = run_cli("volunteer", "enroll", "alice",
                   env={"CELERY_BROKER_URL": broker.url(0, user="plain", password=SECRET)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "enroll alice: Redis refused" in done.stderr and "admin" in done.stderr
    assert "Traceback" not in done.stderr


def test_enroll_json_is_the_contract_and_the_url_works(broker) -> None:
    done = run_cli("volunteer", "enroll", "alice", "--json",
                   env={"CELERY_BROKER_URL": broker.url(0)})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert set(found) == {"name", "broker_url", "namespace"}
    assert (found["name"], found["namespace"]) == ("alice", "vol:alice:")
    volunteer = redis.Redis.from_url(found["broker_url"], socket_timeout=5)
    volunteer.set("vol:alice:mine", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        volunteer.get("cpu")
    bad = run_cli("volunteer", "enroll", "Bad:Name", env={"CELERY_BROKER_URL": broker.url(0)})
    assert bad.returncode == 2 and "volunteer name 'Bad:Name'" in bad.stderr
