"""``idle-accel ping``: does this worker answer through the broker? (The container HEALTHCHECK.)"""

from __future__ import annotations

from typing import Annotated

import typer

from compute.app import create_app
from compute.settings import Settings
from worker.cli.options import setting_help
from worker.runner import node_name


def ping(
    name: Annotated[str | None, typer.Option("--name", help=setting_help("name"))] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Exit 0 when the worker named NAME answers a ping through the broker, else 1."""
    settings = Settings.load(name=name)
    node = node_name(settings.name)
    app = create_app(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    finally:
        app.close()
    if not any(node in reply for reply in replies):
        typer.echo(f"{node}: no answer in {timeout:g} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"{node}: pong")
