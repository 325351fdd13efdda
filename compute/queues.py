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

_NAME = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,99}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable queue name, else raise ``ValueError``."""
    if not _NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is not allowed: use 1-100 characters of a-z, 0-9, "
            "'.', '_', ':' and '-', starting with a letter or digit"
        )
    return name
