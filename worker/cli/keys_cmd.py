"""``idle-accel keys``: the team's task-signing key pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from compute import signing

keys = typer.Typer(help="Signed tasks: make the team's key pair.", no_args_is_help=True)


@keys.command("new")
def new(out: Annotated[Path, typer.Option(help="Folder for team.key and team.pub.")]
        = Path("keys")) -> None:
    """Make an Ed25519 key pair: team.key signs (keep it on the team's side), team.pub checks."""
    key, pub = signing.new_keys(out)
    console = Console()
    console.print(f"private key: {key} (mode 0600; set IDLE_ACCEL_SIGNING_KEY={key} where "
                  "tasks are sent)")
    console.print(f"public key:  {pub} (give it to workers: IDLE_ACCEL_TRUSTED_KEY={pub})")
