"""``idle-accel worker``: run one idle-gated worker in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from compute.settings import Settings
from worker.cli.options import setting_help
from worker.runner import run_worker


def _option(flag: str, key: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=setting_help(key))


def worker(
    name: Annotated[str | None, _option("--name", "name")] = None,
    queues: Annotated[str | None, _option("--queues", "queues")] = None,
    concurrency: Annotated[int | None, _option("--concurrency", "concurrency")] = None,
    sensor: Annotated[str | None, _option("--sensor", "sensor")] = None,
    sensor_max_age: Annotated[float | None, _option("--sensor-max-age", "sensor_max_age")] = None,
    idle_after: Annotated[float | None, _option("--idle-after", "idle_after")] = None,
    preempt_after: Annotated[float | None, _option("--preempt-after", "preempt_after")] = None,
    mode: Annotated[str | None, _option("--mode", "mode")] = None,
    region: Annotated[str | None, _option("--region", "region")] = None,
    allow_emergency_when_busy: Annotated[bool | None, typer.Option(
        "--allow-emergency-when-busy/--no-emergency-when-busy",
        help=setting_help("allow_emergency_when_busy"))] = None,
    include: Annotated[str | None, _option("--include", "include")] = None,
    loglevel: Annotated[str | None, _option("--loglevel", "log_level")] = None,
) -> None:
    """Run one idle-gated worker in the foreground (SIGTERM: graceful stop).

    It takes tasks only while the owner is away, stops its running tasks the
    moment the owner returns, continues them when the owner has been away
    --idle-after seconds, and requeues them after --preempt-after seconds busy.
    """
    settings = Settings.load(
        name=name, queues=queues, concurrency=concurrency, sensor=sensor,
        sensor_max_age=sensor_max_age, idle_after=idle_after, preempt_after=preempt_after,
        mode=mode, region=region, include=include, log_level=loglevel,
        allow_emergency_when_busy=allow_emergency_when_busy,
    )
    for warning in settings.security_warnings():
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    raise typer.Exit(run_worker(settings))
