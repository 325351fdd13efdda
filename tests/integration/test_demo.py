"""`idle-accel demo --quick`, the README's "run it" command, end to end."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import psutil
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
    assert "Flower: http://127.0.0.1:" in text and "user demo" in text
    assert "compute.diag.sleep: argument 'seconds' must be a number" in text
    assert "suspended about" in text  # the owner came back mid-task, and left again
    assert (output / "totals.csv").read_text().startswith("\"country\",\"total\",\"n\"")
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
