"""``idle-accel fleet``: what every worker of the fleet is doing, from their status reports."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compute import redis_clients, verify
from compute.app import create_app
from compute.errors import ConfigError
from compute.settings import Settings, redact
from worker import credit, fleet_mode
from worker.cli.tables import folding_table
from worker.fleet_view import hardware_text, reasons_text
from worker.status import read_fleet

fleet = typer.Typer(help="See and steer the whole fleet.", no_args_is_help=True)


def _client(settings: Settings) -> Any:
    return redis_clients.connect(settings.backend_url,
                                 settings.redis_options(settings.backend_url))


def _load() -> list[dict[str, Any]]:
    settings = Settings.load()
    with _client(settings) as client:
        return read_fleet(client)


@fleet.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every live worker: owner state and reasons, mode, queues, hardware, tasks."""
    workers = _load()
    if as_json:
        print(json.dumps({"workers": workers}, indent=2))
        return
    table = folding_table("worker", "mode", "state", "why", "queues", "region", "hardware",
                  "running", "suspended")
    for document in workers:
        cells = [str(document.get("node")), str(document.get("mode")),
                 str(document.get("state")), reasons_text(document),
                 ",".join(map(str, document.get("consuming") or [])) or "(none)",
                 str(document.get("region") or "-"), hardware_text(document),
                 str(document.get("running", 0)), str(document.get("suspended", 0))]
        table.add_row(*map(escape, cells))  # report text is data, never rich markup
    console = Console()
    console.print(table)
    consuming = sum(1 for document in workers if document.get("consuming"))
    modes = {document.get("fleet_mode", "normal") for document in workers}
    # Name the broker asked: "0 workers" from the wrong Redis must not look like a quiet fleet.
    broker = redact(Settings.load().backend_url)
    console.print(f"{len(workers)} workers reported to {broker}, {consuming} consuming; "
                  f"fleet mode: {', '.join(sorted(modes)) or 'normal'}", highlight=False,
                  soft_wrap=True)
    console.print(capacity_table(workers))


def capacity_table(workers: list[dict[str, Any]]) -> Table:
    """Cores and GPUs per region and per mode: base (dedicated) and idle (volunteer)."""
    table = folding_table("region", "mode", "workers", "consuming", "cores", "cores taking work",
                  "GPUs taking work", title="capacity")
    rows: dict[tuple[str, str], list[int]] = {}
    for doc in workers:
        key = (doc.get("region") or "(none)", str(doc.get("mode")))
        hardware = doc.get("hardware") or {}
        cores, gpus = int(hardware.get("cores") or 0), len(hardware.get("gpus") or [])
        taking = bool(doc.get("consuming"))
        row = rows.setdefault(key, [0, 0, 0, 0, 0])
        for index, value in enumerate((1, int(taking), cores, cores * taking, gpus * taking)):
            row[index] += value
    for (region, mode), values in sorted(rows.items()):
        table.add_row(region, mode, *(str(value) for value in values))
    return table


@fleet.command("emergency")
def emergency(
    switch: Annotated[str, typer.Argument(help="on: every worker takes only emergency "
                                               "work; off: back to normal.")],
    requeue_running: Annotated[bool, typer.Option(
        "--requeue-running", help="End normal tasks running at the switch and requeue them "
                                  "(default: let them finish).")] = False,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, help="Seconds to wait for every worker's status report to show "
                              "the new mode before saying which have not.")] = 10.0,
) -> None:
    """Switch the whole fleet to the emergency queues, or back (also workers that join later).

    Counts as switched what the workers' own status reports show, not the
    broadcast's replies (a reply can miss its short window on a busy broker).
    """
    if switch not in ("on", "off"):
        raise ConfigError(f"fleet emergency: say 'on' or 'off'; got {switch!r}")
    mode = fleet_mode.Mode(switch == "on", requeue_running)
    wanted = "emergency" if mode.emergency else "normal"
    settings = Settings.load()
    with _client(settings) as client:
        app = create_app(settings)
        try:
            fleet_mode.switch(client, app, mode)
        finally:
            app.close()
        deadline = time.monotonic() + wait
        while True:
            workers = read_fleet(client)
            pending = sorted(str(doc.get("node")) for doc in workers
                             if doc.get("fleet_mode", "normal") != wanted)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    console = Console()
    console.print(f"fleet mode: {'EMERGENCY' if mode.emergency else 'normal'}; "
                  f"{len(workers) - len(pending)} of {len(workers)} workers switched")
    if pending:
        console.print(escape(f"not switched after {wait:g} s (they follow within a report "
                             f"interval, or when they come back): {', '.join(pending)}"))


@fleet.command("credits")
def credits(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each volunteer's tasks, CPU-seconds and GPU-seconds (successful tasks, once each)."""
    settings = Settings.load()
    with _client(settings) as client:
        rows = credit.table(client)
    if as_json:
        print(json.dumps({"credits": rows}, indent=2))
        return
    table = folding_table("volunteer", "tasks", "CPU-seconds", "GPU-seconds", title="credit")
    for row in rows:
        table.add_row(row["node"], str(row["tasks"]), f"{row['cpu_seconds']:.1f}",
                      f"{row['gpu_seconds']:.1f}")
    Console().print(table)


@fleet.command("verdicts")
def verdicts(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="How many of the latest verdicts.")] = 20,
    disagreed: Annotated[bool, typer.Option(
        "--disagreed", help="Only verdicts where some machine answered otherwise (refused, "
                            "or agreed by k while another dissented).")] = False,
) -> None:
    """Latest verdicts on verified tasks (verify=k): agreed, or which machines disagreed."""
    settings = Settings.load()
    with _client(settings) as client:
        rows = verify.verdicts(client, limit=verify.KEEP_VERDICTS if disagreed else limit)
    if disagreed:
        rows = [row for row in rows if not row["agreed"] or len(row["groups"]) > 1][:limit]
    if as_json:
        print(json.dumps({"verdicts": rows}, indent=2))
        return
    table = folding_table("verified task", "task", "k", "verdict", "machines", title="verdicts")
    for row in rows:
        dissent = sum(len(group) for group in row["groups"][1:])
        verdict = ("[red]DISAGREED[/]" if not row["agreed"] else
                   f"agreed, [yellow]{dissent} dissent[/]" if dissent else "agreed")
        table.add_row(escape(row["id"]), escape(str(row["task"])), str(row["k"]), verdict,
                      escape(row["summary"]))
    Console().print(table)
