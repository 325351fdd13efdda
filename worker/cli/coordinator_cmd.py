"""``idle-accel coordinator``: the trusted half between the team's queues and volunteers.

Runs in the foreground next to Redis, with admin (or team) credentials in
``CELERY_BROKER_URL``; SIGTERM stops it gracefully (the lock is released, a
standby takes over at once). Every field of
:class:`compute.coordinator.service.Config` is a flag here and an
``IDLE_ACCEL_COORDINATOR_*`` variable.

``--region R``: serve only region R's volunteers, on R's own Redis
(``IDLE_ACCEL_REGION_REDIS_URL``, or ``IDLE_ACCEL_REGION_REDIS_URL_FILE``),
pulling work from the team's (``CELERY_BROKER_URL``); see
``compute/coordinator/regions.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import signal
import threading
from typing import Annotated, Any

import typer

from compute.app import create_app
from compute.coordinator import regions
from compute.coordinator.service import Config, Coordinator
from compute.errors import ConfigError
from compute.settings import Settings, redact
from worker.celery_gate import close_client

HELP = {
    "interval": "Longest wait between steps when nothing happens (seconds).",
    "sweep_interval": "Seconds between sweeps of volunteers, leases and queues.",
    "lease_timeout": "A task whose lease is older than this (seconds) is reissued: its "
                     "volunteer vanished or froze.",
    "missing_grace": "A task in no queue, lease or result for this long (seconds) is "
                     "reissued: its volunteer dropped it.",
    "deadline": "Seconds an assignment may take at most before it is reissued.",
    "ahead": "Tasks queued per volunteer beyond its idle pool processes.",
    "error_quorum": "A task's failure stands once this many volunteers report one.",
    "report_max_age": "A status report older than this (seconds) is ignored.",
    "lock_ttl": "Seconds the active coordinator's lock lasts without renewal.",
    "quota_interval": "Seconds between quota checks.",
    "quota_bytes": "Bytes a volunteer may hold in its namespace before it is disabled.",
    "max_connections": "Connections a volunteer may open before it is disabled.",
    "max_messages_per_second": "Pub/sub messages a second a volunteer may publish.",
    "relay_events": "Republish volunteers' task events for Flower.",
    "region": "Serve only this region's volunteers, on its own Redis "
              f"({regions.URL_VARIABLE} or {regions.URL_FILE_VARIABLE}), pulling work from "
              "the team's Redis (CELERY_BROKER_URL).",
    "region_timeout": "Seconds without a region's heartbeat after which its outstanding "
                      "work goes back to the team's queues (any coordinator does it).",
}


def _flag(field: dataclasses.Field) -> Any:
    name = field.name.replace("_", "-")
    env = f"IDLE_ACCEL_COORDINATOR_{field.name.upper()}"
    decls = [f"--{name}/--no-{name}"] if field.type in (bool, "bool") else [f"--{name}"]
    return typer.Option(*decls, envvar=env, help=f"{HELP[field.name]} [env: {env}]")


def coordinator(**given: Any) -> None:
    """Move work from the team's queues to idle volunteers, reissue what is late or lost,
    store results, decide verified results and grant credit (SIGTERM: graceful stop)."""
    settings = Settings.load()
    logging.basicConfig(level=settings.log_level,
                        format="[%(asctime)s: %(levelname)s/coordinator] %(message)s")
    config = Config(**{k: v for k, v in given.items() if v is not None})
    app = create_app(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    regional = None
    url = regions.regional_url(settings)
    if config.region:
        regions.check_region(config.region)
        if not url:
            raise ConfigError(f"--region {config.region} needs its Redis: set "
                              f"{regions.URL_VARIABLE} (or {regions.URL_FILE_VARIABLE})")
        regional = regions.connect_regional(settings, url)
    elif url:
        raise ConfigError(f"{regions.URL_VARIABLE} is set: give --region (the region whose "
                          "volunteers that Redis holds)")
    service = Coordinator(app, config, regional=regional)
    logging.getLogger(__name__).info(
        "coordinator starting (broker %s%s)", redact(settings.broker_url),
        f"; region {config.region} on {redact(url)}" if config.region else "")
    try:
        service.run(stop)
    finally:
        close_client(app)
        if regional is not None:
            regional.close()


_params = []
for _field in dataclasses.fields(Config):
    _type = {"float": float, "int": int, "bool": bool, "str": str}.get(str(_field.type),
                                                                      _field.type)
    _params.append(inspect.Parameter(_field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=Annotated[_type | None, _flag(_field)]))
coordinator.__signature__ = inspect.Signature(_params)  # type: ignore[attr-defined]
