"""A small TCP proxy on loopback whose link the test can cut: the worker-to-broker network.

``cut(seconds)`` resets every open connection and, for ``seconds``, resets
each new one at once (a router that went away: clients see errors and retry,
rather than waiting on a silent socket). Then traffic flows again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._down_until = 0.0
        self._closed = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, password: str, db: int = 0) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/{db}"

    def cut(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            sockets, self._open = self._open, []
            self.cuts += 1
        for sock in sockets:
            _reset(sock)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut(0)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True,
                                 name="proxy-pump").start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _reset(sink)
        _reset(source)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # linger 0: close with RST, as a failed link looks to the other end
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()
