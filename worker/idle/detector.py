"""Build the owner-idle detector from settings: signals, sampler and policy limits."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from compute.settings import Settings
from worker.idle import backend
from worker.idle._common import Probe
from worker.idle.cpu import OthersCpu
from worker.idle.exclusive import ExclusivePrograms
from worker.idle.gpu import OthersGpu
from worker.idle.guard import Guarded
from worker.idle.input import InputIdle
from worker.idle.lock import ScreenLock
from worker.idle.memory import OthersMemory
from worker.idle.processes import OwnProcesses, ProcessCatalog
from worker.idle.sampler import Sampler, Signal, battery_signal
from worker.policy import Thresholds

#: Seconds a probe that talks to another process (X11, D-Bus) may take.
PROBE_TIMEOUT = 0.5


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        idle_after=settings.idle_after, preempt_after=settings.preempt_after,
        locked_idle_after=settings.locked_idle_after,
        cpu_busy_percent=settings.cpu_busy_percent, gpu_busy_percent=settings.gpu_busy_percent,
        memory_busy_percent=settings.memory_busy_percent,
        run_on_battery=settings.run_on_battery, battery_floor_percent=settings.battery_floor,
        require_input=settings.require_input, sensor_max_age=settings.sensor_max_age,
    )


def _guarded(probes: list[tuple[str, Probe, bool]]) -> list[Guarded]:
    return [Guarded(name, probe, timeout=PROBE_TIMEOUT if blocking else None)
            for name, probe, blocking in probes]


def local_sampler(settings: Settings,
                  roots: Callable[[], Iterable[int]] = lambda: [os.getpid()]) -> Sampler:
    """Every local signal, excluding the process trees under ``roots`` (the worker)."""
    catalog = ProcessCatalog()
    own = OwnProcesses(roots=roots, uids=[int(uid) for uid in settings.own_uids],
                       catalog=catalog)
    cpu = OthersCpu(own, window=settings.cpu_window)
    gpu = OthersGpu(own)
    memory = OthersMemory(own)
    exclusive = ExclusivePrograms(settings.exclusive_programs, catalog, own)
    inputs = InputIdle(_guarded(backend.current.input_probes()))
    lock = ScreenLock(_guarded(backend.current.lock_probes()))
    gpu_probe = Guarded("nvml", gpu.measure, timeout=2.0, retry_unknown=60.0)
    poll, sample = settings.poll_interval, settings.sample_interval
    signals = [  # exclusive first: it refreshes the catalogue the others rely on
        Signal("exclusive", lambda _now: exclusive.measure(), 5 * sample),
        Signal("input_idle", lambda _now: inputs.measure(), poll),
        Signal("screen_locked", lambda _now: lock.measure(), sample),
        Signal("others_cpu", cpu.measure, sample),
        Signal("others_gpu", lambda _now: gpu_probe(), sample),
        Signal("others_memory", lambda _now: memory.measure(), 2 * sample),
        battery_signal(10 * sample),
    ]
    return Sampler(signals, details=lambda: {"gpus": gpu.devices,
                                             "cpu_window": settings.cpu_window})
