"""The README's "Write your own task" runs as written: its module, its two ways to send."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_write_your_own_task_works_verbatim(workers, broker_env, tmp_path):
    section = _section("Write your own task")
    module = re.search(r"```python\n(# team_tasks\.py\n.*?)```", section, re.S).group(1)
    (tmp_path / "team_tasks.py").write_text(module)
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [line for line in shell.splitlines() if line and not line.startswith("#")]
    worker_line, *client_lines = lines
    assert worker_line.startswith("PYTHONPATH=. idle-accel worker --include team_tasks")
    # The worker as the README starts it (in the module's folder), always on for the test.
    workers("team", "--include", "team_tasks", "--queues", "cpu", "--mode", "dedicated",
            env={"PYTHONPATH": str(tmp_path)})

    elsewhere = tmp_path / "elsewhere"  # the team's side does not have the module
    elsewhere.mkdir()
    # As in an activated virtual environment: its `python` and `idle-accel` first on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    for line in client_lines:
        done = subprocess.run(["bash", "-c", line], cwd=elsewhere, capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, **broker_env, "PATH": path})
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert done.stdout.strip().splitlines()[-1].strip() == "42", (line, done.stdout)
