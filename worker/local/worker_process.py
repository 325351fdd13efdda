"""Start and stop real ``idle-accel worker`` processes, as a volunteer would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from celery import Celery

from compute.errors import IdleAccelError
from worker.runner import node_name


def cli_command() -> list[str]:
    """How to run ``idle-accel``: its console script beside this Python, or the module."""
    script = Path(sys.executable).with_name("idle-accel")
    if script.exists():
        return [str(script)]
    found = shutil.which("idle-accel")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


class WorkerProcess:
    """One ``idle-accel worker --name NAME ...`` process and its log file.

    Broker credentials travel in the environment, never on the command line.
    The process leads its own process group so that ``kill()`` can take its
    pool children down with it, as a power cut would.
    """

    def __init__(self, name: str, *, env: Mapping[str, str], log_path: Path,
                 args: Sequence[str] = ()) -> None:
        self.name = name
        self.node = node_name(name)
        self.log_path = Path(log_path)
        self.argv = [*cli_command(), "worker", "--name", name, *args]
        self.env = {**os.environ, **env}
        self._log = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    def wait_ready(self, app: Celery, timeout: float = 30.0) -> None:
        """Block until the worker answers a ping through the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise IdleAccelError(f"worker {self.node} exited early:\n{self.log_tail()}")
            if app.control.ping(destination=[self.node], timeout=0.5):
                return
        raise IdleAccelError(f"worker {self.node} not ready after {timeout}s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None, "worker not started"
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Warm shutdown (SIGTERM); kill the whole group if it overstays ``timeout``."""
        if self.process is None:
            return None
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the worker and every process it started (a power cut)."""
        self._kill_group()
        if self.process is not None:
            self.process.wait()
        self._close_log()

    def _kill_group(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]
