"""``idle-accel demo``: a real local cluster, start to finish, in one command."""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from celery.exceptions import TimeoutError as CeleryTimeout
from rich.console import Console
from rich.table import Table

from compute.app import create_app
from compute.settings import Settings
from worker.idle import hostfile
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess


def demo(
    workers: Annotated[int, typer.Option(min=1, max=8, help="Worker processes to start.")] = 2,
    tasks: Annotated[int, typer.Option(min=1, max=1000, help="Diagnostic tasks to send.")] = 8,
    burn: Annotated[
        float, typer.Option(min=0.0, max=10.0, help="CPU seconds each burn task uses.")
    ] = 0.5,
) -> None:
    """Start a private Redis and real workers, run diagnostic tasks, show who ran what."""
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="idle-accel-demo-"))
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(workdir / "redis"))
        console.print(f"redis-server on 127.0.0.1:{redis_server.port} (password-protected)")
        settings = Settings.load(broker_url=redis_server.url(0))
        app = create_app(settings)
        env = {"CELERY_BROKER_URL": redis_server.url(0)}
        fleet = []
        for index in range(workers):
            name = f"demo-{index + 1}"
            # Each demo worker reads its owner from a sensor file that says "away"
            # (a volunteer at the keyboard would otherwise keep the demo waiting).
            sensor = workdir / f"{name}.owner"
            hostfile.write(sensor, {"state": "idle", "at": time.time()})
            process = WorkerProcess(name, env=env, log_path=workdir / f"{name}.log",
                                    args=["--concurrency", "1", "--sensor", f"file:{sensor}",
                                          "--sensor-max-age", "0", "--idle-after", "0"])
            stack.callback(process.stop)
            fleet.append(process.start())
        for process in fleet:
            process.wait_ready(app)
            console.print(f"worker [bold]{process.node}[/] ready")

        started = time.monotonic()
        sent = [app.signature("compute.diag.burn", (burn,)) if i % 2 else
                app.signature("compute.diag.noop") for i in range(tasks)]
        sent.append(app.signature("compute.diag.sleep", ("ten",)))  # refused: not a number
        results = [(sig.task, sig.args, sig.apply_async()) for sig in sent]

        table = Table("task", "args", "state", "worker", "detail")
        for task, args, result in results:
            try:
                value = result.get(timeout=60, propagate=False)
            except CeleryTimeout:
                table.add_row(task, repr(args), "TIMEOUT", "", "no answer in 60 s")
                continue
            if result.successful():
                cpu = value.get("cpu_seconds")
                detail = f"{cpu:.2f} CPU s" if cpu is not None else ""
                table.add_row(task, repr(args), "SUCCESS", value["hostname"], detail)
            else:
                table.add_row(task, repr(args), result.state, "", str(value))
        console.print(table)
        console.print(f"{len(results)} tasks in {time.monotonic() - started:.2f} s; "
                      f"logs in {workdir}")
        app.close()
