"""``idle-accel volunteer install|uninstall`` for real on Linux, HOME a temporary folder.

Without a systemd user session (no user bus, as in CI containers) install falls
back to a background process; where one exists the test asks for that
process with ``--no-service``, so it never touches the real user's systemd.
The worker must start, report its status on the real Redis, and be gone with
every file install wrote once uninstall has run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from compute import keys
from worker import native_install
from worker.local.worker_process import cli_command
from worker.runner import node_name

from .waiting import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the real install runs on Linux")


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_install_runs_a_reporting_worker_and_uninstall_leaves_no_trace(broker, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CELERY_", "IDLE_ACCEL_", "XDG_"))}
    env.update(HOME=str(home), CELERY_BROKER_URL=broker.url(0))
    target = native_install.Target(platform="linux", home=home, env=env)
    bus = native_install.no_user_bus(target, native_install.run_command) is None
    name = f"native-{uuid.uuid4().hex[:8]}"

    def cli(*args: str, without: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli_command(), "volunteer", *args],
                              env={key: value for key, value in env.items() if key != without},
                              capture_output=True, text=True, timeout=120, check=False)

    refused = cli("install", without="CELERY_BROKER_URL")
    installed = cli("install", "--name", name, "--concurrency", "1",
                    *(["--no-service"] if bus else []))
    assert installed.returncode == 0, installed.stderr
    try:
        if not bus:
            assert "no systemd user session (no user bus" in installed.stdout
        assert "background process, PID" in installed.stdout
        record = json.loads(target.pid_path.read_text())
        worker = psutil.Process(record["pid"])
        with broker.client() as client:
            raw = wait_for(lambda: client.get(keys.worker(node_name(name))), timeout=90,
                           every=0.2, what="the installed worker's status report")
        report = json.loads(raw)
        pool = worker.children(recursive=True)
        secret = target.secret_path
        url_password = broker.password
        unit = target.unit_path.read_text()
        cmdline = " ".join(worker.cmdline())
        worker_env = worker.environ()
    finally:
        removed = cli("uninstall")

    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().startswith("idle-accel: no broker URL to install")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert report["node"] == node_name(name) and report["mode"] == "volunteer"
    assert report["pid"] == worker.pid
    assert url_password not in unit and url_password not in cmdline
    assert worker_env["CELERY_BROKER_URL_FILE"] == str(secret)
    assert "CELERY_BROKER_URL" not in worker_env  # only the file holds it
    assert worker_env["IDLE_ACCEL_PREFERENCES"] == str(home / ".config/idle-accel/preferences.toml")

    assert removed.returncode == 0, removed.stderr
    assert f"stopped the worker process (PID {worker.pid})" in removed.stdout
    assert f"removed {secret}" in removed.stdout
    assert wait_for(lambda: gone(worker) and all(gone(child) for child in pool), timeout=10,
                    what="the worker and its pool gone")
    left = sorted(str(path.relative_to(home)) for path in Path(home).rglob("*"))
    assert left == [], left
