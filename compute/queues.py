"""Queue names shared by the app, the workers, the SDK and the CLI.

A queue name says what a task needs, and a worker consumes every queue it can
serve:

- ``cpu`` (the default) and ``gpu``; ``emergency`` for urgent work;
- capacity tiers: ``cpu.ram16`` (at least 16 GiB of RAM), ``gpu.vram24`` (a
  GPU with at least 24 GiB); a task asking for 12 GiB goes to the smallest
  tier that holds it (``cpu.ram16``), which only big-enough workers consume;
- a region: ``cpu@eu-west``, ``gpu.vram24@eu-west``: work pinned to a region
  reaches only workers started with ``--region eu-west``.
"""

from __future__ import annotations

import re

CPU = "cpu"
GPU = "gpu"
EMERGENCY = "emergency"
#: Steps only the team's own machines run (a training round's start and close write the
#: model everyone trains): dedicated workers consume it, the coordinator never serves it.
TEAM = "team"

#: Queues every deployment declares. Others (tiers, regions) are created on first use.
DECLARED = (CPU, GPU, EMERGENCY)

#: Tasks with no special needs go here (DESIGN.md contract 3).
DEFAULT = CPU

#: Celery ``task_routes``: which queue each task family goes to.
ROUTES = {
    "compute.diag.*": {"queue": CPU},
}

#: Capacity tiers in GiB: a worker consumes every tier it reaches.
RAM_TIERS = (2, 4, 8, 16, 32, 64, 128, 256)
VRAM_TIERS = (4, 8, 12, 16, 24, 40, 48, 80, 141)

REGION_SEPARATOR = "@"

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,99}(@[a-z0-9][a-z0-9-]{0,39})?$")


def kind(name: str) -> str:
    """``gpu`` for the GPU queues (``gpu``, ``gpu.vram24``, ``gpu@eu``), else ``cpu``."""
    return GPU if re.match(r"^gpu(?:[.@]|$)", name) else CPU


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable queue name, else raise ``ValueError``."""
    if not _NAME.match(name):
        raise ValueError(
            f"queue name {name!r} is not allowed: use 1-100 characters of a-z, 0-9, "
            "'.', '_', ':' and '-', starting with a letter or digit, and optionally "
            "'@region'"
        )
    return name


def check_region(region: str) -> str:
    """Return ``region`` if it is a usable region tag, else raise ``ValueError``."""
    if not _REGION.match(region):
        raise ValueError(f"region {region!r} is not allowed: use 1-40 characters of a-z, 0-9 "
                         "and '-', starting with a letter or digit")
    return region


def regional(queue: str, region: str) -> str:
    """``queue`` pinned to ``region``: ``cpu``, ``eu-west`` -> ``cpu@eu-west``."""
    return f"{queue}{REGION_SEPARATOR}{check_region(region)}"


def region_of(queue: str) -> str | None:
    """The region a queue is pinned to, or None for an unpinned queue."""
    _, sep, region = queue.partition(REGION_SEPARATOR)
    return region if sep else None


def tier(base: str, kind: str, gib: float, tiers: tuple[int, ...]) -> str:
    """The queue for work on ``base`` needing ``gib`` GiB of ``kind`` (``ram``/``vram``).

    ``gib`` of 0 needs no tier. Raises ``ValueError`` beyond the largest tier.
    """
    if gib <= 0:
        return base
    for size in tiers:
        if gib <= size:
            return f"{base}.{kind}{size}"
    raise ValueError(f"{gib:g} GiB of {kind.upper()} is more than any worker tier "
                     f"({tiers[-1]} GiB)")


def tiers_within(base: str, kind: str, gib: float, tiers: tuple[int, ...]) -> list[str]:
    """Every tier queue a machine with ``gib`` GiB of ``kind`` can serve."""
    return [f"{base}.{kind}{size}" for size in tiers if size <= gib]

