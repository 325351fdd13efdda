"""``idle-accel submit``: send one of the shipped jobs to the fleet, and follow it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from celery.exceptions import TimeoutError as CeleryTimeout
from rich.console import Console

from compute import jobs, plans, render
from compute import queues as q
from compute import verify as verify_mod
from compute.app import create_app
from compute.errors import InvalidArgument
from compute.settings import Settings
from worker.celery_gate import close_client
from worker.cli.broker_errors import reach
from worker.cli.follow import follow, report

submit = typer.Typer(help="Send work to the fleet: a job (sql, render, embed, search, aggregate) "
                          "or one task.",
                     no_args_is_help=True)

Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job to its end.")]
Timeout = Annotated[float, typer.Option(help="Seconds to follow it before giving up.")]
Gpu = Annotated[bool, typer.Option("--gpu", help="Send the parts to workers with a GPU.")]
Region = Annotated[str | None, typer.Option(help="Run only on workers of this region.")]


def _client() -> Any:
    """The team's app, once its result store answered (a clear line, not 20 s of retries)."""
    settings = Settings.load()
    reach(settings.backend_url, settings.redis_options(settings.backend_url))
    return create_app(settings)


def _run(make: Any, wait: bool, timeout: float) -> None:
    console = Console()
    app = _client()
    try:
        job: jobs.Job = make(app)
        console.print(f"job [bold]{job.id}[/] ({job.kind}): {len(job.parts)} parts sent")
        if not wait:
            return
        raise typer.Exit(report(follow(app, job, timeout=timeout, console=console), console))
    finally:
        app.close()


def _pair(text: str, what: str, sep: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(sep))
    except ValueError:
        raise InvalidArgument(f"{what} must look like 2{sep}3; got {text!r}") from None
    return first, second


@submit.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="One SELECT over files: FROM 'sales/*.parquet', "
                                             "or @file.sql.")],
    output: Annotated[str, typer.Option(help="Where the answer goes (.parquet, .json, "
                                             "else CSV).")],
    part_mb: Annotated[float, typer.Option(help="Input bytes per part, in MiB.")] = 64.0,
    small_mb: Annotated[float, typer.Option(help="Largest joined table, in MiB (every part "
                                                 "reads it whole).")] = 64.0,
    region: Region = None, wait: Wait = True, timeout: Timeout = 3600.0,
) -> None:
    """Run one SQL query over Parquet/CSV files, split into parts across volunteers (DuckDB)."""
    text = Path(query[1:]).read_text() if query.startswith("@") else query
    _run(lambda app: plans.sql(app, text, output, part_bytes=max(1, int(part_mb * 2**20)),
                               small_bytes=max(0, int(small_mb * 2**20)), region=region),
         wait, timeout)


@submit.command("aggregate")
def aggregate(
    source: Annotated[str, typer.Argument(help="CSV or Parquet file: a path or a URL.")],
    spec: Annotated[str, typer.Option(help="The job as JSON, or @file.json (see docs/team.md).")],
    output: Annotated[str, typer.Option(help="Where the result goes (.csv, .parquet, .json).")],
    chunk_mb: Annotated[float, typer.Option(help="Input bytes per part, in MiB.")] = 64.0,
    region: Region = None, wait: Wait = True, timeout: Timeout = 3600.0,
) -> None:
    """The JSON spec of earlier versions (filter, group_by, aggregate), run as SQL."""
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"--spec is not JSON: {exc}") from None
    _run(lambda app: plans.aggregate(app, source, parsed, output,
                                     chunk_bytes=max(1, int(chunk_mb * 1024 * 1024)),
                                     region=region), wait, timeout)


@submit.command("embed")
def embed(
    corpus: Annotated[str, typer.Argument(help="Text file, one document per line.")],
    output: Annotated[str, typer.Option(help="Where the embeddings go (.npy).")],
    rows_per_part: Annotated[int, typer.Option(help="Documents per task.")] = 256,
    gpu: Gpu = False, region: Region = None, wait: Wait = True, timeout: Timeout = 3600.0,
) -> None:
    """Embed every line of a corpus with MiniLM, in parts across volunteers."""
    _run(lambda app: plans.embed(app, corpus, output, rows_per_part=rows_per_part, gpu=gpu,
                                 region=region), wait, timeout)


@submit.command("search")
def search(
    embeddings: Annotated[str, typer.Argument(help="The .npy an embed job wrote.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option(help="How many best matches.")] = 5,
    parts: Annotated[int, typer.Option(help="Tasks to split the search into.")] = 4,
    corpus: Annotated[str | None, typer.Option(help="The corpus, to show matching text.")] = None,
    gpu: Gpu = False, region: Region = None, wait: Wait = True, timeout: Timeout = 600.0,
) -> None:
    """Semantic search (top-k cosine) over embeddings, map/reduce across volunteers."""
    _run(lambda app: plans.search(app, embeddings, query, k=k, parts=parts, corpus=corpus,
                                  gpu=gpu, region=region), wait, timeout)


@submit.command("render")
def render_job(
    output: Annotated[str, typer.Option(help="PNG of the frame (tiles), or a folder (frames).")],
    blend: Annotated[str, typer.Option(help="The .blend scene.")] = str(render.DEMO_SCENE),
    frames: Annotated[str | None, typer.Option(help="A frame range like 1-4.")] = None,
    frame: Annotated[int, typer.Option(help="The frame to render in tiles.")] = 1,
    tiles: Annotated[str, typer.Option(help="Tile grid, columns x rows.")] = "2x2",
    samples: Annotated[int, typer.Option(help="Cycles samples per pixel.")] = 32,
    seed: Annotated[int, typer.Option(help="Cycles sampling seed.")] = 0,
    resolution: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT (default: the scene's).")]
    = None,
    gpu: Gpu = False, region: Region = None, wait: Wait = True, timeout: Timeout = 3600.0,
) -> None:
    """Render with Blender Cycles: a frame range, or one frame split into tiles."""
    settings = {"samples": samples, "seed": seed,
                "resolution": list(_pair(resolution, "--resolution", "x")) if resolution
                else None}
    if frames:
        first, last = _pair(frames, "--frames", "-")
        _run(lambda app: plans.render_frames(app, blend, first, last, output,
                                             settings=settings, gpu=gpu, region=region),
             wait, timeout)
    else:
        grid = _pair(tiles, "--tiles", "x")
        _run(lambda app: plans.render_tiles(app, blend, frame, output, grid=grid,
                                            settings=settings, gpu=gpu, region=region),
             wait, timeout)


def _json_arg(text: str, what: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, kind):
        raise InvalidArgument(f"{what} must be a JSON {'list' if kind is list else 'object'}")
    return value


@submit.command("task")
def task(
    name: Annotated[str, typer.Argument(help="A registered task, e.g. compute.diag.checksum.")],
    args: Annotated[str, typer.Option(help="Positional arguments, a JSON list.")] = "[]",
    kwargs: Annotated[str, typer.Option(help="Keyword arguments, a JSON object.")] = "{}",
    verify: Annotated[int | None, typer.Option(
        help="Run on this many distinct machines; accept the result only if they agree.")]
    = None,
    tolerance: Annotated[float, typer.Option(
        help="With --verify: relative difference allowed between numbers.")] = 0.0,
    region: Region = None, wait: Wait = True, timeout: Timeout = 600.0,
) -> None:
    """Send one task (any registered one), optionally verified on k machines, and wait."""
    positional = _json_arg(args, "--args", list)
    named = _json_arg(kwargs, "--kwargs", dict)
    app = _client()
    console = Console()
    try:
        app.loader.import_default_modules()
        task = app.tasks.get(name)  # the team's own tasks live on the workers, not here
        options: dict[str, Any] = {}
        if region:
            # where Celery's own routing sends it, pinned to the region
            routed = app.amqp.router.route({}, name, positional, named, task)
            options["queue"] = q.regional(routed["queue"].name, region)
        if verify is not None:
            options.update(verify=verify, tolerance=tolerance)
        if task is not None:
            result = task.apply_async(positional, named, **options)
        else:
            result = app.send_task(name, positional, named, **options)
        console.print(f"task [bold]{result.id}[/] sent"
                      + (f" to {verify} distinct machines" if verify else ""))
        if task is None:
            console.print(f"{name} is not among this client's task modules: sent by name; a "
                          "worker that does not serve it fails it as not registered",
                          highlight=False)
        if not wait:
            return
        raise typer.Exit(_outcome(app, result, timeout, console, verified=verify is not None))
    finally:
        close_client(app)


def _outcome(app: Any, result: Any, timeout: float, console: Console, *,
             verified: bool = False) -> int:
    try:
        value = result.get(timeout=timeout, propagate=False)
    except CeleryTimeout:
        if result.state == "PENDING":
            console.print(f"not started after {timeout:g} s: no worker has taken it yet "
                          "(idle-accel fleet status shows which workers take tasks, and why "
                          "the others wait); it stays queued", highlight=False)
        else:
            console.print(f"still running after {timeout:g} s ({result.state})",
                          highlight=False)
        if verified:
            console.print("idle-accel fleet verdicts shows the verdict once decided")
        return 3
    if result.successful():
        print(json.dumps(value, indent=2))
        return 0
    console.print(f"[red]failed:[/] {value}")
    found = verify_mod.report(app.backend.client, result.id)
    if found and found["verdict"]:
        for group in found["verdict"]["groups"]:
            hosts = ", ".join(f"{o['node']} (host {o['host']})" for o in group)
            console.print(f"  {hosts}: {json.dumps(group[0]['result'])[:200]}"
                          + (f" error {group[0]['error']}" if group[0]["error"] else ""))
    return 1
