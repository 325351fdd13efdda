"""What this machine can offer: cores, memory, NVIDIA GPUs (NVML) and region, and its queues.

Measured once at start. A worker consumes ``cpu`` always, ``gpu`` when NVML
reports a usable GPU, the capacity tiers its RAM and VRAM reach
(``cpu.ram16``, ``gpu.vram24``), and, with ``--region``, the region-qualified
twin of each (``cpu@eu-west``) so that pinned work reaches only workers of
that region (see ``compute/queues.py``).
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from compute import queues as q


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Hardware:
    cores: int
    ram_bytes: int
    gpus: tuple[Gpu, ...]
    system: str
    gpu_note: str = ""  # why no GPU is listed, when none is

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "gpus": [asdict(gpu) for gpu in self.gpus]}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def find_gpus(nvml: Any = None) -> tuple[tuple[Gpu, ...], str]:
    """(usable NVIDIA GPUs, why none) from NVML; no driver means no GPU, with a note."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
    except Exception as exc:
        return (), f"NVML not available: {exc}"
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(Gpu(index, _text(nvml.nvmlDeviceGetName(handle)), int(memory.total)))
        return tuple(found), "" if found else "NVML sees no NVIDIA GPU"
    except Exception as exc:
        return (), f"NVML failed: {exc}"
    finally:
        with contextlib.suppress(Exception):  # a library that half started
            nvml.nvmlShutdown()


def measure(nvml: Any = None) -> Hardware:
    gpus, note = find_gpus(nvml)
    return Hardware(cores=os.cpu_count() or 1, ram_bytes=int(psutil.virtual_memory().total),
                    gpus=gpus, system=f"{platform.system()} {platform.machine()}",
                    gpu_note=note)


GIB = 1024**3


def queues_for(configured: tuple[str, ...], hardware: Hardware,
               region: str | None = None, *, team: bool = False) -> tuple[str, ...]:
    """The queues to consume: ``configured``, else what the hardware serves; plus region twins.

    Automatic: ``cpu`` and the RAM tiers the machine reaches; with an NVIDIA
    GPU also ``gpu`` and the VRAM tiers of its largest GPU; with ``team`` (a
    dedicated worker: the team's own machine) the ``team`` queue too.
    """
    base = list(configured)
    if not base:
        base = [q.CPU, *q.tiers_within(q.CPU, "ram", hardware.ram_bytes / GIB, q.RAM_TIERS)]
        if hardware.gpus:
            vram = max(gpu.memory_bytes for gpu in hardware.gpus) / GIB
            base += [q.GPU, *q.tiers_within(q.GPU, "vram", vram, q.VRAM_TIERS)]
        if team:
            base.append(q.TEAM)
    if not region:
        return tuple(base)
    regional = [q.regional(name, region) for name in base if not q.region_of(name)]
    return tuple(dict.fromkeys([*base, *regional]))
