"""A RabbitMQ virtual host of its own, on the machine's RabbitMQ (127.0.0.1:5672).

For tests and benchmarks: they never touch the server's other vhosts; each
run gets a fresh vhost for the guest user, deleted afterwards. Settings the
server only has globally (its ``consumer_timeout``, checked every
``channel_tick_interval``) are changed through :func:`server_setting` and
always put back.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator

from kombu import Connection

HOST = "127.0.0.1:5672"


def ctl(*args: str, timeout: float = 60) -> str:
    program = shutil.which("rabbitmqctl")
    if program is None:
        raise RuntimeError("rabbitmqctl is not installed (Debian package rabbitmq-server)")
    done = subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Vhost:
    def __init__(self) -> None:
        self.name = f"idle-accel-test-{uuid.uuid4().hex[:8]}"
        self.url = f"amqp://guest:guest@{HOST}/{self.name}"

    def __enter__(self) -> Vhost:
        ctl("add_vhost", self.name)
        ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def __exit__(self, *_exc: object) -> None:
        ctl("delete_vhost", self.name)

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (0 if it does not exist yet)."""
        with Connection(self.url) as connection:
            channel = connection.channel()
            try:
                return channel.queue_declare(queue, passive=True).message_count
            except Exception:  # NOT_FOUND closes the channel: no such queue, no messages
                return 0

    def close_connections(self) -> int:
        """Close every client connection to this vhost, as a broker restart would."""
        listed = ctl("list_connections", "pid", "vhost", "-q")
        pids = [line.split()[0] for line in listed.splitlines()
                if line.split()[1:] == [self.name]]
        for pid in pids:
            ctl("close_connection", pid, "test: connection closed by the broker")
        return len(pids)


def get_setting(key: str) -> str:
    return ctl("eval", f"application:get_env(rabbit, {key}).").strip()


@contextlib.contextmanager
def server_setting(key: str, value: int) -> Iterator[None]:
    """Set the server-wide ``rabbit`` application setting ``key`` for a while."""
    before = get_setting(key)
    ctl("eval", f"application:set_env(rabbit, {key}, {value}).")
    try:
        yield
    finally:
        if before.startswith("{ok,"):
            ctl("eval", f"application:set_env(rabbit, {key}, {before[4:-1]}).")
        else:
            ctl("eval", f"application:unset_env(rabbit, {key}).")
