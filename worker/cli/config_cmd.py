"""``idle-accel config``: show the settings in effect, passwords removed."""

from __future__ import annotations

from rich.console import Console

from compute.settings import Settings
from worker.cli.tables import folding_table


def config() -> None:
    """Show every setting, its environment variable and the value in effect."""
    settings = Settings.load()
    table = folding_table("setting", "environment variable", "value", "meaning")
    for row in settings.describe():
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"this machine's host id (verified results): {settings.host}")
    for warning in settings.security_warnings():
        console.print(f"[yellow]warning:[/] {warning}")
