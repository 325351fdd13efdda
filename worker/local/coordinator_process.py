"""Start and stop a real ``idle-accel coordinator`` process (the demo and the tests)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compute import keys
from compute.errors import IdleAccelError
from worker.local.process import ManagedProcess
from worker.local.worker_process import cli_command


class CoordinatorProcess(ManagedProcess):
    """One ``idle-accel coordinator ...`` process and its log file."""

    def __init__(self, *, env: Mapping[str, str], log_path: Path,
                 args: Sequence[str] = ()) -> None:
        super().__init__([*cli_command(), "coordinator", *args], env=env, log_path=log_path)

    def wait_active(self, client: Any, timeout: float = 30.0) -> None:
        """Block until this coordinator holds the lock (or any does, with ``client``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise IdleAccelError(f"coordinator exited early:\n{self.log_tail()}")
            if client.exists(keys.COORDINATOR_LOCK) and "coordinator active" in self.log_text():
                return
            time.sleep(0.05)
        raise IdleAccelError(f"coordinator not active after {timeout}s:\n{self.log_tail()}")
