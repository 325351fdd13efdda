"""``idle-accel sensor``: the owner-idle detector on its own — live, once, or feeding a file."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from compute.settings import Settings
from worker import preferences
from worker.cli.options import setting_help
from worker.cli.tables import folding_table
from worker.idle import hostfile
from worker.idle.detector import local_sampler, preferences_file, rules_for
from worker.idle.monitor import Monitor, document
from worker.idle.reading import Reading
from worker.policy import Decision


def sensor(
    once: Annotated[bool, typer.Option("--once", help="Take one snapshot and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Keep this sensor file current (for a worker in a container).")] = None,
    idle_after: Annotated[float | None, typer.Option(
        "--idle-after", help=setting_help("idle_after"))] = None,
) -> None:
    """Show the owner's state, with every reading and reason behind it."""
    settings = Settings.load(idle_after=idle_after)
    monitor = Monitor(local_sampler(settings), rules_for(settings))  # type: ignore[arg-type]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if out is not None:
            _feed_file(monitor, settings, out, stop)
        elif once:
            _once(monitor, settings, as_json)
        else:
            _live(monitor, settings, stop)
    except KeyboardInterrupt:
        stop.set()


def _once(monitor: Monitor, settings: Settings, as_json: bool) -> None:
    monitor.tick()  # the first CPU sample only sets a baseline
    time.sleep(settings.sample_interval)
    reading, decision = monitor.tick()
    if as_json:
        print(json.dumps(document(reading, decision), indent=2))
    else:
        Console().print(_table(reading, decision))


def _live(monitor: Monitor, settings: Settings, stop: threading.Event) -> None:
    with Live(_table(*monitor.tick()), refresh_per_second=4) as live:
        monitor.run(stop, lambda r, d: live.update(_table(r, d)), fast=settings.sample_interval)


def _feed_file(monitor: Monitor, settings: Settings, out: Path, stop: threading.Event) -> None:
    """Write at once when the state changes, and every ``sample_interval`` as a heartbeat."""
    last_write = -float("inf")
    prefs_stamp: tuple[int, int] | None = None
    prefs_source = preferences_file(settings)

    def on_tick(reading: Reading, decision: Decision) -> None:
        nonlocal last_write, prefs_stamp
        if decision.changed or reading.at - last_write >= settings.sample_interval:
            hostfile.write(out, document(reading, decision))
            last_write = reading.at
            # A containerized worker reads its preferences from this copy.
            prefs_stamp = preferences.mirror(prefs_source, out.parent / "preferences.toml",
                                             prefs_stamp)
        if decision.changed:
            why = "; ".join(reason.message for reason in decision.reasons) or "owner away"
            print(f"owner {decision.state.value}: {why}", file=sys.stderr, flush=True)

    monitor.run(stop, on_tick, fast=settings.poll_interval, slow=settings.sample_interval)
    hostfile.write(out, {"state": "busy", "at": time.time(),
                         "reasons": [{"code": "sensor_stopped", "message": "sensor stopped"}]})


def _table(reading: Reading, decision: Decision) -> Table:
    why = "; ".join(reason.message for reason in decision.reasons) or "owner away"
    table = folding_table("signal", "value", "source", title=f"owner {decision.state.value}: {why}")
    for name in Reading.SIGNALS:
        measure = getattr(reading, name)
        table.add_row(name, _shown(measure.value) if measure.known else
                      f"[yellow]unknown[/]: {measure.unknown}", measure.source)
    for note in decision.notes:
        table.add_row("note", note.message, note.code)
    return table


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if hasattr(value, "__dataclass_fields__"):
        return ", ".join(f"{key}={val}" for key, val in vars(value).items())
    return str(value)
