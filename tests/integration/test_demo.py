"""`idle-accel demo --quick`, the README's quick-start command, end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from worker.local.worker_process import cli_command


def test_the_demo_runs_every_part_and_leaves_nothing_behind(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    env["COLUMNS"] = "200"
    output = tmp_path / "demo-output"

    done = subprocess.run([*cli_command(), "demo", "--quick", "--output", str(output)],
                          env=env, capture_output=True, text=True, timeout=900)

    text = done.stdout
    assert done.returncode == 0, text[-3000:] + done.stderr[-3000:]
    assert "Flower: http://127.0.0.1:" in text and "user demo" in text and "/fleet)" in text
    # Through the trust boundary: volunteers enrolled, each in its own namespace.
    assert "coordinator active" in text and text.count("(enrolled volunteer demo-") == 2
    assert "compute.diag.sleep: argument 'seconds' must be a number" in text
    assert "suspended about" in text  # the owner came back mid-task, and left again
    totals = (output / "totals.csv").read_text().splitlines()
    assert totals[0] == "\"country\",\"total\",\"n\"" and len(totals) == 4  # fr, de, it
    assert (output / "corpus.npy").exists()
    with Image.open(output / "render.png") as image:
        assert image.size == (160, 120)
    workdir = text.rsplit("logs in ", 1)[1].split()[0]
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if workdir in cmdline or str(output) in cmdline:
            leftovers.append(cmdline)
    assert leftovers == []
    assert "Traceback" not in done.stderr
    assert_no_secret_in_logs(Path(workdir), text + done.stderr)


def assert_no_secret_in_logs(workdir: Path, console: str) -> None:
    """The Redis password is in its 0600 config file only, in no log and not on the console;
    Flower's password is shown once on the console (the demo's user logs in with it), in no log."""
    config = (workdir / "redis" / "redis.conf").read_text()
    redis_password = re.search(r"^requirepass (\S+)$", config, re.M).group(1)
    flower_password = re.search(r"password (\S+)", console).group(1)
    logs = [path for path in workdir.rglob("*") if path.is_file() and path.suffix == ".log"]
    assert len(logs) >= 4  # Redis, Flower and the workers
    assert redis_password not in console
    for path in logs:
        body = path.read_text(errors="replace")
        assert redis_password not in body, path
        assert flower_password not in body, path


def _wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = log.read_text(errors="replace") if log.exists() else ""
        if text in body:
            return body
        assert process.poll() is None, f"the demo exited early:\n{body[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not printed in {timeout} s:\n{body[-3000:]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_a_closed_terminal_stops_the_whole_cluster(tmp_path, signum):
    """Started as a newcomer would (--keep-running), reached from "another terminal" with the
    lines it prints, then stopped by SIGTERM or SIGHUP: nothing it started is left running."""
    env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    env["COLUMNS"] = "200"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen([*cli_command(), "demo", "--quick", "--keep-running",
                                 "--output", str(tmp_path / "out")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if signum == signal.SIGTERM:  # the whole run, then the printed commands, then stop
            text = _wait_for_line(log, "running until Ctrl-C", demo, timeout=600)
            export = re.search(r'export CELERY_BROKER_URL="\$\(cat (\S+)\)"', text)
            url = Path(export.group(1)).read_text().strip()
            assert url not in text  # the password stays in the 0600 file
            assert stat.S_IMODE(Path(export.group(1)).stat().st_mode) == 0o600
            shown = subprocess.run([*cli_command(), "fleet", "status", "--json"],
                                   env={**env, "CELERY_BROKER_URL": url}, capture_output=True,
                                   text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            nodes = {worker["node"] for worker in json.loads(shown.stdout)["workers"]}
            assert {node.split("@")[0] for node in nodes} >= {"demo-1", "demo-2"}
        else:  # a terminal closed while the demo still runs its tasks
            _wait_for_line(log, "Flower: http://", demo, timeout=300)
        started = psutil.Process(demo.pid).children(recursive=True)
        assert len(started) >= 4  # Redis, Flower, the coordinator, the workers
        demo.send_signal(signum)
        assert demo.wait(timeout=120) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [], alive
    assert "interrupted: stopping everything" in log.read_text()
