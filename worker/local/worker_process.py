"""Start and stop real ``idle-accel worker`` processes, as a volunteer would."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from compute import keys
from compute.errors import IdleAccelError
from worker.local.process import ManagedProcess
from worker.runner import node_name


def cli_command() -> list[str]:
    """How to run ``idle-accel``: its console script beside this Python, or the module."""
    script = Path(sys.executable).with_name("idle-accel")
    if script.exists():
        return [str(script)]
    found = shutil.which("idle-accel")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


class WorkerProcess(ManagedProcess):
    """One ``idle-accel worker --name NAME ...`` process and its log file."""

    def __init__(self, name: str, *, env: Mapping[str, str], log_path: Path,
                 args: Sequence[str] = ()) -> None:
        if "IDLE_ACCEL_PREFERENCES" not in env and "--preferences" not in args:
            # A local cluster (demo, tests, benchmarks) never reads this machine's own
            # volunteer preferences, and its workers open no control page.
            preferences = log_path.with_name(f"{log_path.stem}.preferences.toml")
            preferences.parent.mkdir(parents=True, exist_ok=True)
            preferences.write_text("[control]\nport = 0\n")
            env = {**env, "IDLE_ACCEL_PREFERENCES": str(preferences)}
        super().__init__([*cli_command(), "worker", "--name", name, *args], env=env,
                         log_path=log_path)
        self.name = name
        self.node = node_name(name)

    def wait_ready(self, app: Celery, timeout: float = 30.0) -> None:
        """Block until the worker answers a ping through the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise IdleAccelError(f"worker {self.node} exited early:\n{self.log_tail()}")
            if app.control.ping(destination=[self.node], timeout=0.5):
                return
        raise IdleAccelError(f"worker {self.node} not ready after {timeout}s:\n{self.log_tail()}")

    def wait_reported(self, client: Any, node: str | None = None, timeout: float = 30.0,
                      *, consuming: bool = False) -> None:
        """Block until the fleet lists this worker (its status report under the team's keys).

        A volunteer's worker in its own namespace cannot be pinged by the team;
        the coordinator republishes its report once it sees it (as ``node``).
        ``consuming``: until the report also says it takes work (what the
        coordinator places work by), not just that it exists.
        """
        key = keys.worker(node or self.node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise IdleAccelError(f"worker {self.node} exited early:\n{self.log_tail()}")
            raw = client.get(key)
            if raw is not None and (not consuming or _takes_work(raw)):
                return
            time.sleep(0.05)
        raise IdleAccelError(f"worker {self.node} not listed after {timeout}s:\n"
                             f"{self.log_tail()}")


def _takes_work(raw: bytes) -> bool:
    try:
        report = json.loads(raw)
    except ValueError:
        return False
    return isinstance(report, dict) and report.get("state") == "idle" \
        and bool(report.get("consuming"))
