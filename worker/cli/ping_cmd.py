"""``idle-accel ping``: is this worker alive? (The container HEALTHCHECK.)

By default it asks the worker through the broker (Celery remote control).
``--from-status`` reads the status report the worker keeps in Redis instead
(written every few seconds, gone three report intervals after the worker
stops): it works under the ``volunteer`` Redis user, which may not broadcast
remote control (deploy/redis/users.acl).
"""

from __future__ import annotations

from typing import Annotated

import typer

from compute import keys, redis_clients
from compute.app import create_app
from compute.settings import Settings
from worker.cli.options import setting_help
from worker.runner import node_name


def ping(
    name: Annotated[str | None, typer.Option("--name", help=setting_help("name"))] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
    from_status: Annotated[bool, typer.Option(
        "--from-status", help="Read the worker's status report in Redis instead of asking "
                              "it (no remote control needed).")] = False,
) -> None:
    """Exit 0 when the worker named NAME answers a ping through the broker, else 1."""
    settings = Settings.load(name=name)
    node = node_name(settings.name)
    if from_status:
        with redis_clients.connect(settings.backend_url,
                                   settings.redis_options(settings.backend_url),
                                   timeout=timeout) as client:
            if not client.exists(settings.namespace + keys.worker(node)):
                typer.echo(f"{node}: no status report in Redis", err=True)
                raise typer.Exit(1)
        typer.echo(f"{node}: reporting")
        return
    app = create_app(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    finally:
        app.close()
    if not any(node in reply for reply in replies):
        typer.echo(f"{node}: no answer in {timeout:g} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"{node}: pong")
