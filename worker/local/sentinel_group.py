"""A Redis Sentinel group on loopback, for tests and benchmarks: a primary, a replica and
three sentinels.

Every process on a free port, in the test's folder; the data nodes share one
password (in their 0600 config files), the sentinels have none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from worker.local.redis_server import RedisServer, TlsFiles, find_binary, free_port

MASTER = "idle-accel"


USERS = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "sentinel-users.conf"


def sentinel_users(admin_password: str) -> str:
    """The shipped sentinel users (``deploy/redis/sentinel-users.conf``), filled in."""
    digest = hashlib.sha256(admin_password.encode()).hexdigest()
    return (USERS.read_text().replace("ADMIN_PASSWORD_SHA256", digest)
            .replace("ADMIN_PASSWORD", admin_password))


class SentinelGroup:
    """``tls``: every process speaks TLS only (data nodes, replication, sentinels), with
    one certificate for 127.0.0.1 signed by the CA clients are given."""

    def __init__(self, directory: Path, tls: TlsFiles | None = None) -> None:
        self.directory = directory
        self.tls = tls
        over_tls = ["tls-replication yes"] if tls else []
        self.primary = RedisServer(directory / "primary", tls=tls, extra_config=over_tls)
        self.password = self.primary.password
        self.primary.extra_config.append(f"masterauth {self.password}")
        self.replica = RedisServer(directory / "replica", password=self.password, tls=tls,
                                   extra_config=[*over_tls, f"masterauth {self.password}",
                                                 f"replicaof 127.0.0.1 {self.primary.port}"])
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica.start()
        self._wait(lambda: self._info(self.replica).get("master_link_status") == "up",
                   "the replica in sync")
        for index in range(len(self.sentinel_ports)):
            self._start_sentinel(index)
        for port in self.sentinel_ports:  # each knows the replica and the other two sentinels
            self._wait(lambda port=port: self._sees_group(port),
                       f"sentinel {port} to see the group", 60, self._diagnosis)
        return self

    def _start_sentinel(self, index: int, tries: int = 5) -> None:
        """Start sentinel ``index``; if it dies before answering (its port, free when it was
        chosen, was taken meanwhile by another process), again on a new port."""
        for _ in range(tries):
            port = self.sentinel_ports[index]
            folder = self.directory / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text("\n".join([
                "bind 127.0.0.1", *self._listen(port), f'dir "{folder}"',
                f'logfile "{folder / "sentinel.log"}"',
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2",
                f"sentinel auth-pass {MASTER} {self.password}",
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 10000",
                sentinel_users(self.password),
            ]) + "\n")
            config.chmod(0o600)
            process = subprocess.Popen([find_binary(), str(config), "--sentinel"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and process.poll() is None:
                if self._sentinel(port, "PING"):
                    if index < len(self.sentinels):
                        self.sentinels[index] = process
                    else:
                        self.sentinels.append(process)
                    return
                time.sleep(0.05)
            if process.poll() is None:
                process.kill()
            process.wait()
            self.sentinel_ports[index] = free_port()
        raise TimeoutError(f"no sentinel would start; last log:\n{self._log_tail(port)}")

    def _sees_group(self, port: int) -> bool:
        sentinels = self._sentinel(port, "SENTINEL", "SENTINELS", MASTER)
        replicas = self._sentinel(port, "SENTINEL", "REPLICAS", MASTER)
        return (sentinels is not None and len(sentinels) == len(self.sentinel_ports) - 1
                and replicas is not None and len(replicas) == 1)

    def _log_tail(self, port: int, lines: int = 15) -> str:
        log = self.directory / f"sentinel-{port}" / "sentinel.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) \
            if log.exists() else "(no log)"

    def _diagnosis(self) -> str:
        """What each sentinel sees and says, for a group that did not form."""
        report = []
        for port, process in zip(self.sentinel_ports, self.sentinels, strict=False):
            sentinels = self._sentinel(port, "SENTINEL", "SENTINELS", MASTER)
            replicas = self._sentinel(port, "SENTINEL", "REPLICAS", MASTER)
            report.append(f"sentinel {port} (exit {process.poll()}): "
                          f"{len(sentinels or [])} other sentinels, "
                          f"{len(replicas or [])} replicas\n{self._log_tail(port)}")
        return "\n".join(report)

    def url(self, db: int = 0) -> str:
        """kombu's Sentinel URL: the data nodes' password in the first part."""
        ports = self.sentinel_ports
        return (f"sentinel://:{self.password}@127.0.0.1:{ports[0]};"
                + ";".join(f"sentinel://127.0.0.1:{port}" for port in ports[1:]) + f"/{db}")

    def primary_port(self) -> int:
        _host, port = self._sentinel(self.sentinel_ports[0], "SENTINEL",
                                    "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(port)

    def hold_replica(self, padding_mb: int = 32) -> None:
        """From now on the replica receives none of the primary's writes, until
        :meth:`kill_primary`: the replica is stopped (SIGSTOP) and ``padding_mb`` of
        filler is written to the primary, more than the sockets between them buffer, so
        every later write waits in the primary's memory and dies with it. What
        asynchronous replication can lose in a failover, made certain."""
        assert self.replica._process is not None
        os.kill(self.replica._process.pid, signal.SIGSTOP)
        self._held = True
        with self.primary.client() as client:
            block = b"x" * (1024 * 1024)
            for i in range(padding_mb):
                client.set(f"idle-accel-test:padding:{i}", block)

    def release_replica(self) -> None:
        """Let a held replica go on (it catches up with the primary)."""
        if getattr(self, "_held", False):
            assert self.replica._process is not None
            os.kill(self.replica._process.pid, signal.SIGCONT)
            self._held = False

    def kill_primary(self, on_killed: Callable[[], None] | None = None) -> float:
        """SIGKILL the primary (and let a held replica go on); seconds until the sentinels
        name the replica instead. ``on_killed`` is called once the primary is dead."""
        assert self.primary._process is not None
        os.kill(self.primary._process.pid, signal.SIGKILL)
        self.primary._process.wait()
        if on_killed is not None:
            on_killed()
        self.release_replica()
        started = time.monotonic()
        self._wait(lambda: self.primary_port() == self.replica.port, "the failover", 60)
        return time.monotonic() - started

    def wait_replicated(self) -> None:
        """Until the replica has every write the primary acknowledged so far."""
        with self.primary.client() as client:
            assert client.wait(1, 10_000) >= 1, "the replica did not acknowledge"

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for server in (self.replica, self.primary):
            with contextlib.suppress(Exception):
                server.stop()

    def _info(self, server: RedisServer) -> dict:
        with server.client() as client:
            return client.info("replication")

    def _listen(self, port: int) -> list[str]:
        if self.tls is None:
            return [f"port {port}"]
        return ["port 0", f"tls-port {port}", f'tls-cert-file "{self.tls.cert}"',
                f'tls-key-file "{self.tls.key}"', f'tls-ca-cert-file "{self.tls.ca}"',
                "tls-auth-clients no", "tls-replication yes"]

    def client_tls(self) -> dict[str, str | bool]:
        """redis-py's options for this group's sentinels and data nodes."""
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca)}

    def _sentinel(self, port: int, *command: str):
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                             **self.client_tls()) as client:
                return client.execute_command(*command)
        except (redis.RedisError, OSError):
            return None

    @staticmethod
    def _wait(predicate, what: str, timeout: float = 30.0,
              diagnosis: Callable[[], str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (redis.RedisError, OSError, TypeError, ValueError):
                pass
            time.sleep(0.1)
        detail = f"\n{diagnosis()}" if diagnosis is not None else ""
        raise TimeoutError(f"no {what} after {timeout} s{detail}")
