"""``idle-accel metrics``: serve the fleet's owner states, tasks and queues to Prometheus."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated

import redis
import typer

from compute import queues as q
from compute import redis_clients
from compute.settings import Settings
from worker import credit
from worker.metrics import queue_lengths, render
from worker.status import read_fleet


def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 9808,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve /metrics (Prometheus text format), read from Redis at each scrape."""
    settings = Settings.load()
    client = redis_clients.connect(settings.backend_url,
                                   settings.redis_options(settings.backend_url))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is here")
                return
            try:
                workers = read_fleet(client)
                body = render(workers, queue_lengths(client, workers, q.DECLARED),
                              credit.table(client)).encode()
            except redis.RedisError as exc:
                self.send_error(503, f"Redis unreachable: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # scrapes are not news
            return

    server = ThreadingHTTPServer((address, port), Handler)
    typer.echo(f"serving http://{address}:{port}/metrics", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
