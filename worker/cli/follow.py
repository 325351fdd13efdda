"""Following a job from the command line: a progress bar, then the outcome."""

from __future__ import annotations

import json
import time
from typing import Any

from celery import Celery
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from compute import jobs


def follow(app: Celery, job: jobs.Job, *, timeout: float, console: Console) -> dict[str, Any]:
    """Show progress until the job's assemble step ends (or ``timeout``); its last status."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[who]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"{job.kind} {job.id[:8]}", total=len(job.parts), who="")
        while True:
            status = jobs.status(app, job)
            who = ", ".join(f"{name} {count}" for name, count in status["workers"].items())
            progress.update(bar, completed=status["done"], who=who)
            if status["state"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
                return status
            time.sleep(0.25)


def report(status: dict[str, Any], console: Console, as_json: bool = False) -> int:
    """Print a job's status; the exit code: 0 done, 1 failed, 3 still running."""
    if as_json:
        print(json.dumps(status, indent=2, default=str))
    else:
        console.print(f"job {status['id']} ({status['kind']}): {status['state']}, "
                      f"{status['done']}/{status['total']} parts done")
        for failure in status["failures"]:
            console.print(f"  [red]part {failure['task']} failed:[/] {failure['error']}")
        if status["error"]:
            console.print(f"  [red]failed:[/] {status['error']}")
        if status["result"] is not None:
            console.print(json.dumps(status["result"], indent=2, default=str))
    return {"SUCCESS": 0, "FAILURE": 1}.get(status["state"], 3)
