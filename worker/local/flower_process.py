"""Run Flower (the admins' web UI) for the app, with basic auth, on a loopback port."""

from __future__ import annotations

import base64
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from compute.errors import IdleAccelError
from worker.local.process import ManagedProcess
from worker.local.redis_server import free_port


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 302 is the answer, not a hop
        return None


_NO_REDIRECTS = urllib.request.build_opener(_KeepRedirects)


class FlowerProcess(ManagedProcess):
    """``idle-accel flower`` (Flower with the Fleet page) on 127.0.0.1, generated credentials.

    The credentials go through Flower's ``FLOWER_BASIC_AUTH`` variable, not
    the command line; ``url`` has none in it.
    """

    def __init__(self, *, env: Mapping[str, str], log_path: Path, user: str = "admin",
                 password: str | None = None, db: Path | None = None,
                 plain: bool = False) -> None:
        self.port = free_port()
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        command = (["-m", "celery", "-A", "compute.app", "flower"] if plain  # no Fleet page
                   else ["-m", "worker.cli", "flower"])
        argv = [sys.executable, *command, "--address=127.0.0.1", f"--port={self.port}"]
        if db is not None:
            argv += ["--persistent=True", f"--db={db}"]
        super().__init__(argv, env={**env, "FLOWER_BASIC_AUTH": f"{user}:{self.password}"},
                         log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, auth: bool = True, timeout: float = 10) -> tuple[int, bytes]:
        """(HTTP status, body) of ``GET path``, with the credentials unless ``auth`` is off."""
        return self.request("GET", path, auth=auth, timeout=timeout)

    def post(self, path: str, form: Mapping[str, str], *, auth: bool = True,
             headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(HTTP status, body) of a form posted to ``path`` (redirects not followed)."""
        return self.request("POST", path, data=urllib.parse.urlencode(form).encode(),
                            auth=auth, headers=headers)

    def request(self, method: str, path: str, *, data: bytes | None = None, auth: bool = True,
                headers: Mapping[str, str] | None = None,
                timeout: float = 10) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=data,  # noqa: S310 - loopback
                                         method=method, headers=dict(headers or {}))
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with _NO_REDIRECTS.open(request, timeout=timeout) as response:
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
