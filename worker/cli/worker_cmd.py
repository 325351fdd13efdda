"""``idle-accel worker``: run one idle-gated worker in the foreground."""

from __future__ import annotations

from typing import Any

import typer

from compute.settings import Settings
from worker.cli.broker_errors import login_refused
from worker.cli.options import with_setting_flags
from worker.runner import run_worker


@with_setting_flags
def worker(**overrides: Any) -> None:
    """Run one idle-gated worker in the foreground (SIGTERM: graceful stop).

    It takes tasks only while the owner is away, stops its running tasks the
    moment the owner returns, continues them when the owner has been away
    --idle-after seconds, and requeues them after --preempt-after seconds busy.
    Every setting is a flag here; a flag wins over its environment variable.
    """
    settings = Settings.load(**overrides)
    for warning in settings.security_warnings():
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    refused = login_refused(settings.broker_url, settings.redis_options(settings.broker_url))
    if refused:
        typer.secho(f"idle-accel: {refused}", fg="red", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_worker(settings))
