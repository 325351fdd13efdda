"""``idle-accel fleet``: what every worker of the fleet is doing, from their status reports."""

from __future__ import annotations

import json
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from compute.settings import Settings
from worker.status import read_fleet

fleet = typer.Typer(help="See and steer the whole fleet.", no_args_is_help=True)

GIB = 1024**3


def _load() -> list[dict[str, Any]]:
    settings = Settings.load()
    with redis.Redis.from_url(settings.backend_url, socket_timeout=5,
                              socket_connect_timeout=5) as client:
        return read_fleet(client)


def _hardware(document: dict[str, Any]) -> str:
    hardware = document.get("hardware") or {}
    text = f"{hardware.get('cores', '?')} cores, {hardware.get('ram_bytes', 0) / GIB:.0f} GiB"
    for gpu in hardware.get("gpus") or []:
        text += f", {gpu.get('name')} {gpu.get('memory_bytes', 0) / GIB:.0f} GiB"
    return text


@fleet.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every live worker: owner state and reasons, mode, queues, hardware, tasks."""
    workers = _load()
    if as_json:
        print(json.dumps({"workers": workers}, indent=2))
        return
    table = Table("worker", "mode", "state", "why", "queues", "region", "hardware",
                  "running", "suspended")
    for document in workers:
        why = "; ".join(reason.get("message", "") for reason in document.get("reasons") or [])
        table.add_row(str(document.get("node")), str(document.get("mode")),
                      str(document.get("state")), why or "-",
                      ",".join(document.get("consuming") or []) or "(none)",
                      document.get("region") or "-", _hardware(document),
                      str(document.get("running", 0)), str(document.get("suspended", 0)))
    console = Console()
    console.print(table)
    consuming = sum(1 for document in workers if document.get("consuming"))
    console.print(f"{len(workers)} workers, {consuming} consuming")
