"""``idle-accel volunteer up|down|status``: run the dockerized worker and the host sensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compute.settings import Settings
from worker import volunteer_host as host
from worker.local.worker_process import cli_command

volunteer = typer.Typer(help="Share this machine: the worker container and its owner sensor.",
                        no_args_is_help=True)

SensorDir = Annotated[Path, typer.Option(help="Folder of the sensor file shared with the "
                                              "container.")]
DEFAULT_DIR = Path.home() / ".idle-accel"


@volunteer.command("up")
def up(
    image: Annotated[str, typer.Option(help="Worker image.")] = "idle-accelerator:local",
    sensor_dir: SensorDir = DEFAULT_DIR,
    cpus: Annotated[float, typer.Option(min=0.1, help="CPU cores the container may use.")] = 2.0,
    memory: Annotated[str, typer.Option(help="Memory limit, e.g. 2g.")] = "2g",
    gpus: Annotated[bool, typer.Option("--gpus", help="Pass the NVIDIA GPUs through.")] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Pool processes.")] = None,
    region: Annotated[str | None, typer.Option(help="Region tag of this worker.")] = None,
) -> None:
    """Start the host's owner sensor and the worker container (broker: CELERY_BROKER_URL)."""
    settings = Settings.load(region=region)
    plan = host.Plan(image=image, broker_url=settings.broker_url,
                     sensor_dir=sensor_dir.expanduser().resolve(), cpus=cpus, memory=memory,
                     gpus=gpus, concurrency=concurrency, region=settings.region)
    print(json.dumps(host.up(plan, cli_command())))


@volunteer.command("down")
def down(sensor_dir: SensorDir = DEFAULT_DIR) -> None:
    """Stop the worker container (running tasks go back to the queue) and the sensor."""
    print(json.dumps(host.down(sensor_dir.expanduser().resolve())))


@volunteer.command("status")
def status(sensor_dir: SensorDir = DEFAULT_DIR) -> None:
    """The container's state, the sensor's PID and the owner state it last wrote."""
    print(json.dumps(host.status(sensor_dir.expanduser().resolve()), indent=2))
