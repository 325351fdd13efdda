"""Run Flower (the admins' web UI) for the app, with basic auth, on a loopback port."""

from __future__ import annotations

import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from compute.errors import IdleAccelError
from worker.local.process import ManagedProcess
from worker.local.redis_server import free_port


class FlowerProcess(ManagedProcess):
    """``celery -A compute.app flower`` on 127.0.0.1 with generated credentials.

    The credentials go through Flower's ``FLOWER_BASIC_AUTH`` variable, not
    the command line; ``url`` has none in it.
    """

    def __init__(self, *, env: Mapping[str, str], log_path: Path, user: str = "admin",
                 password: str | None = None, db: Path | None = None) -> None:
        self.port = free_port()
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        argv = [sys.executable, "-m", "celery", "-A", "compute.app", "flower",
                "--address=127.0.0.1", f"--port={self.port}"]
        if db is not None:
            argv += ["--persistent=True", f"--db={db}"]
        super().__init__(argv, env={**env, "FLOWER_BASIC_AUTH": f"{user}:{self.password}"},
                         log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True, timeout: float = 10) -> tuple[int, bytes]:
        """(HTTP status, body) of ``GET path``, with the credentials unless ``auth`` is off."""
        request = urllib.request.Request(self.url + path)  # noqa: S310 - http on loopback
        if auth:
            import base64

            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise IdleAccelError(f"Flower exited early:\n{self.log_tail()}")
            try:
                status, _ = self.get("/healthcheck", auth=False, timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise IdleAccelError(f"Flower not ready after {timeout}s:\n{self.log_tail()}")
