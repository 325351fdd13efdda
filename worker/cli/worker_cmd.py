"""``idle-accel worker``: run one worker in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from compute.settings import Settings
from worker.cli.options import setting_help
from worker.runner import run_worker


def worker(
    name: Annotated[str | None, typer.Option("--name", help=setting_help("name"))] = None,
    queues: Annotated[str | None, typer.Option("--queues", help=setting_help("queues"))] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help=setting_help("concurrency"))
    ] = None,
    include: Annotated[str | None, typer.Option("--include", help=setting_help("include"))] = None,
    loglevel: Annotated[
        str | None, typer.Option("--loglevel", help=setting_help("log_level"))
    ] = None,
) -> None:
    """Run one worker in the foreground (SIGTERM: finish running tasks, then stop)."""
    settings = Settings.load(
        name=name, queues=queues, concurrency=concurrency, include=include, log_level=loglevel
    )
    for warning in settings.security_warnings():
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    raise typer.Exit(run_worker(settings))
