"""``idle-accel volunteer up|down|status``: run the dockerized worker and the host sensor;
``idle-accel volunteer pause|resume|snooze``: the preferences' holds (``volunteer_control``);
``idle-accel volunteer install|uninstall``: the worker as a login service, without Docker;
``idle-accel volunteer enroll|revoke|list`` (admin): volunteers' own Redis users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import redis
import typer

from compute import redis_clients
from compute.coordinator import regions, registry
from compute.errors import ConfigError
from compute.settings import Settings
from worker import native_install
from worker import volunteer_host as host
from worker.cli import volunteer_control as control
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
    network: Annotated[str | None, typer.Option(
        help="Docker network mode of the container, e.g. host when the broker is on this "
             "machine's loopback (default: the engine's default network).")] = None,
) -> None:
    """Start the host's owner sensor and the worker container (broker: CELERY_BROKER_URL)."""
    settings = Settings.load(region=region)
    plan = host.Plan(image=image, broker_url=settings.broker_url,
                     sensor_dir=sensor_dir.expanduser().resolve(), cpus=cpus, memory=memory,
                     gpus=gpus, concurrency=concurrency, region=settings.region,
                     network=network)
    print(json.dumps(host.up(plan, cli_command())))


@volunteer.command("down")
def down(sensor_dir: SensorDir = DEFAULT_DIR) -> None:
    """Stop the worker container (running tasks go back to the queue) and the sensor."""
    print(json.dumps(host.down(sensor_dir.expanduser().resolve())))


PrefsFile = Annotated[Path | None, typer.Option(
    "--preferences", help="The preferences file (default: IDLE_ACCEL_PREFERENCES, else "
                          "~/.config/idle-accel/preferences.toml).")]


@volunteer.command("status")
def status(sensor_dir: SensorDir = DEFAULT_DIR, prefs: PrefsFile = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The container's state and the sensor's PID; a native worker's owner state and why,
    tasks, credit, schedule and preferences (from its local control page)."""
    control.show(host.status(sensor_dir.expanduser().resolve()),
                 control.preferences_path(prefs), as_json)


@volunteer.command("pause")
def pause(prefs: PrefsFile = None) -> None:
    """Take no task until resumed (written to the preferences file: survives restarts)."""
    typer.echo(control.pause(control.preferences_path(prefs)))


@volunteer.command("resume")
def resume(prefs: PrefsFile = None) -> None:
    """Lift a pause and a snooze."""
    typer.echo(control.resume(control.preferences_path(prefs)))


@volunteer.command("snooze")
def snooze(minutes: Annotated[float, typer.Argument(min=1, max=10080, help="Minutes.")],
           prefs: PrefsFile = None) -> None:
    """Take no task for MINUTES minutes."""
    typer.echo(control.snooze(control.preferences_path(prefs), minutes))


@volunteer.command("install")
def install(
    no_service: Annotated[bool, typer.Option(
        "--no-service", help="Register no login service: start the worker now as a background "
                             "process (a PID file; uninstall stops it).")] = False,
    broker_url_file: Annotated[Path | None, typer.Option(
        help="File holding the broker URL (default: $CELERY_BROKER_URL_FILE's, else "
             "$CELERY_BROKER_URL).")] = None,
    name: Annotated[str | None, typer.Option(help="Worker name, NAME or NAME@HOST.")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Pool processes.")] = None,
    region: Annotated[str | None, typer.Option(help="Region tag of this worker.")] = None,
) -> None:
    """Run the worker at every login without Docker: a systemd user unit, a launchd agent or
    a Task Scheduler task (again: replaces). The broker URL goes into a file only you can
    read; without a systemd user session the worker runs as a background process."""
    target = native_install.Target.here()
    url = native_install.broker_url_from(target.env, broker_url_file)
    argv = native_install.worker_argv(cli_command(), name=name, concurrency=concurrency,
                                      region=region)
    done = native_install.install(target, url, argv, service=not no_service)
    for line in done.replaced:
        if not line.startswith("removed"):
            typer.echo(f"previous install: {line}")
    if done.replaced:
        typer.echo("previous install removed")
    how = {"systemd": f"systemd user unit {native_install.SERVICE}, enabled: starts at login",
           "launchd": f"launchd agent {native_install.LABEL}: starts at login",
           "schtasks": f"Task Scheduler task {native_install.TASK!r}: starts at logon",
           "process": f"background process, PID {done.pid}: not started again at login"}
    if done.fallback:
        typer.echo(f"no systemd user session ({done.fallback}): the unit file is written but "
                   "not enabled; the worker runs as a background process instead")
    typer.echo(f"installed the volunteer worker ({how[done.method]})")
    typer.echo(f"  unit file:   {target.unit_path}")
    typer.echo(f"  broker URL:  {target.secret_path} (readable by you only)")
    typer.echo(f"  preferences: {target.preferences_path}")
    typer.echo("  log:         " + (f"journalctl --user -u {native_install.SERVICE}"
                                   if done.method == "systemd" else str(target.log_path)))
    typer.echo(f"  manifest:    {target.manifest_path}")
    typer.echo("undo with: idle-accel volunteer uninstall")


@volunteer.command("uninstall")
def uninstall(purge: Annotated[bool, typer.Option(
        "--purge", help="Also remove your preferences file.")] = False) -> None:
    """Stop the natively installed worker and remove everything install and the worker
    wrote (your preferences stay unless --purge)."""
    for line in native_install.uninstall(native_install.Target.here(), purge=purge):
        typer.echo(line)


def _admin_client(settings: Settings) -> redis.Redis:
    """The Redis that holds the volunteers: a region's own (IDLE_ACCEL_REGION_REDIS_URL),
    else the team's (CELERY_BROKER_URL)."""
    url = regions.regional_url(settings)
    if url:
        return regions.connect_regional(settings, url)
    return redis_clients.connect(settings.broker_url, settings.redis_options(settings.broker_url),
                                 timeout=10)


@volunteer.command("enroll")
def enroll(
    name: Annotated[str, typer.Argument(help="The volunteer's name (a-z, 0-9, '-', '_').")],
    region: Annotated[str | None, typer.Option(
        help="The only region whose pinned work it may take.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url_only: Annotated[bool, typer.Option(
        "--url-only", help="Print the broker URL alone (for a secrets file).")] = False,
) -> None:
    """Create NAME's own Redis user, confined to its namespace; print its broker URL.

    Run with an admin user's CELERY_BROKER_URL. Enrolling again gives a new
    password (the old one stops working). With IDLE_ACCEL_REGION_REDIS_URL (or its
    _FILE variant) the user and record are made on that region's own Redis, and the
    URL printed is of that Redis: give --region, the region its coordinator serves.
    """
    settings = Settings.load()
    url = regions.regional_url(settings) or settings.broker_url
    if url != settings.broker_url and region is None:
        raise ConfigError(f"{regions.URL_VARIABLE} is set: give --region (the region whose "
                          "coordinator serves that Redis)")
    with _admin_client(settings) as client, redis_clients.connect(
            settings.broker_url, settings.redis_options(settings.broker_url),
            timeout=10) as team:
        found = registry.enroll(client, url, name, region=region, names=team)
    if url_only:
        print(found.broker_url)
        return
    if as_json:
        print(json.dumps(found.to_json()))
        return
    typer.echo(f"volunteer {found.name} enrolled; its keys and channels: {found.namespace}*")
    typer.echo("give it this broker URL (its worker needs nothing else):")
    typer.echo(f"  CELERY_BROKER_URL={found.broker_url}")


@volunteer.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The volunteer's name.")]) -> None:
    """Switch NAME's Redis user off and drop its connections; the coordinator reissues
    what it held and removes its keys (within a sweep, about a second)."""
    settings = Settings.load()
    with _admin_client(settings) as client:
        dropped = registry.disable(client, name, "revoked by an admin")
    typer.echo(f"volunteer {name} revoked ({dropped} connection(s) dropped); the coordinator "
               "reissues its tasks")


@volunteer.command("list")
def list_volunteers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
                    ) -> None:
    """Every enrolled volunteer: state, region, when enrolled, why disabled."""
    settings = Settings.load()
    with _admin_client(settings) as client:
        found = registry.records(client)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for name, record in sorted(found.items()):
        typer.echo(f"{name}\t{record.get('state')}\t{record.get('region') or '-'}\t"
                   f"{record.get('reason') or ''}")
