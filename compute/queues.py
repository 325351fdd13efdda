"""Queue names shared by the app, the workers and the CLI."""

import re

CPU = "cpu"
GPU = "gpu"
EMERGENCY = "emergency"

#: Queues every deployment declares. Others (region-qualified ones, say) are
#: created on first use.
DECLARED = (CPU, GPU, EMERGENCY)

#: Tasks with no special needs go here (DESIGN.md contract 3).
DEFAULT = CPU

#: Celery ``task_routes``: which queue each task family goes to.
ROUTES = {
    "compute.diag.*": {"queue": CPU},
}

#: Separates a queue from its region: ``cpu.eu-west`` is ``cpu`` pinned to ``eu-west``.
REGION_SEPARATOR = "."

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,99}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable queue name, else raise ``ValueError``."""
    if not _NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is not allowed: use 1-100 characters of a-z, 0-9, "
            "'.', '_', ':' and '-', starting with a letter or digit"
        )
    return name


def check_region(region: str) -> str:
    """Return ``region`` if it is a usable region tag, else raise ``ValueError``."""
    if not _REGION.match(region):
        raise ValueError(f"region {region!r} is not allowed: use 1-40 characters of a-z, 0-9 "
                         "and '-', starting with a letter or digit")
    return region


def regional(queue: str, region: str) -> str:
    """``queue`` pinned to ``region``: ``cpu``, ``eu-west`` -> ``cpu.eu-west``."""
    return f"{queue}{REGION_SEPARATOR}{check_region(region)}"


def region_of(queue: str) -> str | None:
    """The region a queue is pinned to, or None for an unpinned queue."""
    _, sep, region = queue.rpartition(REGION_SEPARATOR)
    return region if sep else None
