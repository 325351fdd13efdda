"""Start one Celery worker in this process from :class:`~compute.settings.Settings`."""

from __future__ import annotations

from celery.utils.nodenames import default_nodename, host_format

from compute.app import create_app
from compute.settings import Settings


def node_name(name: str) -> str:
    """The Celery node name a worker started with ``--name name`` takes.

    ``NAME@HOST`` is used as given; a bare ``NAME`` gets ``@`` and the host
    name, as ``celery multi`` names its nodes. ``%h``, ``%n`` and ``%d`` expand.
    """
    if "@" not in name:
        name = f"{name}@%h"
    return host_format(default_nodename(name))


def run_worker(settings: Settings) -> int:
    """Run a worker in the foreground until it is stopped; return its exit code.

    SIGTERM is a warm shutdown: no new task is taken and running ones finish.
    """
    app = create_app(settings)
    options = {
        "hostname": node_name(settings.name),
        "queues": list(settings.queues),
        "loglevel": settings.log_level,
        "pool_cls": "prefork",
        # Gossip makes every worker follow every other worker's events and
        # mingle asks them all at start: both grow with the square of a fleet
        # of volunteers and nothing here uses them. Remote control stays on.
        "without_gossip": True,
        "without_mingle": True,
    }
    if settings.concurrency is not None:
        options["concurrency"] = settings.concurrency
    worker = app.Worker(**options)
    worker.start()
    return int(worker.exitcode or 0)
