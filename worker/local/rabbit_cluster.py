"""A RabbitMQ cluster of its own on loopback: N nodes, clustered, in a temporary folder.

For tests and benchmarks of quorum queues (``IDLE_ACCEL_QUEUE_TYPE=quorum``):
each node is Debian's ``rabbitmq-server`` under its own node name, AMQP and
distribution ports, Erlang cookie, data and log folders; the machine's own
RabbitMQ (``rabbit@localhost`` on 5672) is never touched. Nodes 2..N join
node 1. ``stop(i)`` stops one node the way an operator or a crash would
(``kill``: the Erlang VM at once; else ``rabbitmqctl stop``), ``start(i)``
brings it back into the cluster.

    with RabbitCluster(3) as cluster:
        url = cluster.url          # amqp://...@127.0.0.1:P1;amqp://...@127.0.0.1:P2;...
        cluster.stop(0, kill=True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from worker.local.redis_server import free_port

USER = "idle-accel"
#: Debian's scripts proper: /usr/sbin's wrappers switch to the rabbitmq user and its HOME
#: (and so its cookie), which would reach the machine's own node instead.
BIN = Path("/usr/lib/rabbitmq/bin")


def _program(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (Debian package rabbitmq-server)")
    return found


@dataclass
class Node:
    name: str  # Erlang node name, e.g. ia-3f2a-1@localhost
    port: int  # AMQP
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, password: str, vhost: str = "/") -> str:
        path = "" if vhost == "/" else vhost
        return f"amqp://{USER}:{password}@127.0.0.1:{self.port}/{path}"


class RabbitCluster:
    def __init__(self, size: int = 3, *, start_timeout: float = 180.0) -> None:
        _program("rabbitmq-server")
        self.size = size
        self.start_timeout = start_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="idle-accel-rabbit-"))
        self.password = uuid.uuid4().hex
        self.cookie = uuid.uuid4().hex.upper()
        tag = uuid.uuid4().hex[:6]
        self.nodes = [Node(f"ia{tag}{i}@localhost", free_port(), free_port(),
                           self.tmp / f"node{i}") for i in range(size)]

    # -- the URL clients use: every node, in order (kombu fails over through them) -------

    @property
    def url(self) -> str:
        return ";".join(node.url(self.password) for node in self.nodes)

    def url_from(self, first: int) -> str:
        """Every node's URL, starting with node ``first`` (a client's preferred node)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ";".join(node.url(self.password) for node in order)

    # -- processes ---------------------------------------------------------------------------

    def _env(self, node: Node) -> dict[str, str]:
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        node.base.mkdir(parents=True, exist_ok=True)
        plugins = self.tmp / "enabled_plugins"
        plugins.write_text("[].\n")
        conf = node.base / "rabbitmq.conf"
        conf.write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
            "loopback_users = none\n"
            "consumer_timeout = 86400000\n"
            "cluster_partition_handling = pause_minority\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": str(home),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_CONF_ENV_FILE": str(node.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_PID_FILE": str(node.base / "pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def ctl(self, i: int, *args: str, timeout: float = 120) -> str:
        node = self.nodes[i]
        done = subprocess.run([_program("rabbitmqctl"), "-n", node.name, *args],
                              env=self._env(node), capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def start(self, i: int) -> None:
        node = self.nodes[i]
        env = self._env(node)
        log = (node.base / "server.log").open("ab")
        node.process = subprocess.Popen([_program("rabbitmq-server")], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.await_startup(i)

    def await_startup(self, i: int) -> None:
        """Wait until node ``i`` runs RabbitMQ (it first has to register with epmd)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            process = self.nodes[i].process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{self.nodes[i].name} exited ({process.returncode}): see "
                                   f"{self.nodes[i].base / 'server.log'}")
            try:
                self.ctl(i, "await_startup", "--timeout", "30", timeout=40)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def stop(self, i: int, *, kill: bool = False) -> None:
        node = self.nodes[i]
        if node.process is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl(i, "stop", timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        node.process = None

    def __enter__(self) -> RabbitCluster:
        try:
            self.start(0)
            self.ctl(0, "add_user", USER, self.password)
            self.ctl(0, "set_permissions", "-p", "/", USER, ".*", ".*", ".*")
            for i in range(1, self.size):
                self.start(i)
                self.ctl(i, "stop_app")
                self.ctl(i, "join_cluster", self.nodes[0].name)
                self.ctl(i, "start_app")
                self.await_startup(i)
            self.wait_running(self.size)
        except BaseException:
            self.__exit__()
            raise
        return self

    def running(self, via: int = 0) -> int:
        """How many nodes node ``via`` sees running."""
        import json

        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return len(status.get("running_nodes", []))

    def wait_running(self, count: int, via: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.running(via) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not reach {count} running nodes")
            time.sleep(0.5)

    def __exit__(self, *_exc: object) -> None:
        for i in range(len(self.nodes)):
            with contextlib.suppress(Exception):
                self.stop(i, kill=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":  # python -m worker.local.rabbit_cluster: start, print, wait
    with RabbitCluster(3) as cluster:
        print(cluster.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
