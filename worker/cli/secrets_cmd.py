"""``idle-accel secrets``: the compose stack's password files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker import deploy_secrets

secrets_app = typer.Typer(help="The compose stack's secrets folder.", no_args_is_help=True)


@secrets_app.command("init")
def init(folder: Annotated[Path, typer.Option(
        "--dir", help="The secrets folder (compose: IDLE_ACCEL_SECRETS, default ./secrets).")]
         = Path("secrets")) -> None:
    """Make a random password file for each role that has none (existing ones are kept)."""
    for name, what in deploy_secrets.init(folder).items():
        typer.echo(f"{what}: {folder / name}")
    url = folder / deploy_secrets.VOLUNTEER_URL
    if not url.exists():
        typer.echo(f"after enrolling this machine's volunteer, put its broker URL in {url}")
