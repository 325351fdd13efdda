"""The root ``idle-accel`` command; each subcommand lives in its own module."""

from __future__ import annotations

import sys

import typer

from compute.errors import IdleAccelError
from worker.cli import (
    broker_errors,
    config_cmd,
    coordinator_cmd,
    demo_cmd,
    fleet_cmd,
    flower_cmd,
    job_cmd,
    keys_cmd,
    metrics_cmd,
    ping_cmd,
    secrets_cmd,
    sensor_cmd,
    submit_cmd,
    train_cmd,  # noqa: F401 (adds `submit train-classifier` and `submit predict`)
    volunteer_cmd,
    worker_cmd,
)

cli = typer.Typer(
    name="idle-accel",
    help="Idle Accelerator: share idle PCs as one Celery compute pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.command("worker")(worker_cmd.worker)
cli.command("config")(config_cmd.config)
cli.command("sensor")(sensor_cmd.sensor)
cli.command("demo")(demo_cmd.demo)
cli.command("metrics")(metrics_cmd.metrics)
cli.command("ping")(ping_cmd.ping)
cli.command("coordinator")(coordinator_cmd.coordinator)
cli.command("flower", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                       "help_option_names": []})(flower_cmd.flower)
cli.add_typer(fleet_cmd.fleet, name="fleet")
cli.add_typer(submit_cmd.submit, name="submit")
cli.add_typer(job_cmd.job, name="job")
cli.add_typer(keys_cmd.keys, name="keys")
cli.add_typer(volunteer_cmd.volunteer, name="volunteer")
cli.add_typer(secrets_cmd.secrets_app, name="secrets")


def main() -> None:
    """Console entry point: errors of ours print one clear line, not a traceback."""
    try:
        cli()
    except IdleAccelError as exc:
        typer.secho(f"idle-accel: {exc}", fg="red", err=True)
        sys.exit(2)
    except broker_errors.BROKER_ERRORS as exc:
        typer.secho(f"idle-accel: {broker_errors.explain(exc)}", fg="red", err=True)
        sys.exit(2)
