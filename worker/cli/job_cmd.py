"""``idle-accel job``: how far a job got, and who did its parts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from compute import jobs
from compute.app import create_app
from compute.settings import Settings
from worker.cli.follow import follow, report

job = typer.Typer(help="Follow jobs sent with `idle-accel submit`.", no_args_is_help=True)


@job.command("status")
def status(job_id: Annotated[str, typer.Argument(help="The id `submit` printed.")],
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           wait: Annotated[bool, typer.Option("--wait", help="Follow it to its end.")] = False,
           ) -> None:
    """Parts done and failed, workers that ran them, and the result once assembled."""
    app = create_app(Settings.load())
    console = Console()
    try:
        found = jobs.load(app, job_id)
        current = (follow(app, found, timeout=3600, console=console) if wait
                   else jobs.status(app, found))
        raise typer.Exit(report(current, console, as_json))
    finally:
        app.close()
