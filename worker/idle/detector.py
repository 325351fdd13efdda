"""Build the owner-idle detector from settings: signals, input events, sampler and policy limits."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from compute.settings import Settings
from worker import preferences
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
from worker.idle.sampler import FileSampler, Sampler, Signal, battery_signal
from worker.idle.wake import Wake, open_events
from worker.policy import Policy, Thresholds
from worker.volunteer_rules import Rules

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


def preferences_file(settings: Settings) -> Path:
    """The volunteer's preferences file: the setting, else the per-user default."""
    return Path(settings.preferences).expanduser() if settings.preferences \
        else preferences.default_path()


def rules_for(settings: Settings) -> Rules:
    """The owner policy with the volunteer's preferences file, watched for changes."""
    watched = preferences.Watched(preferences_file(settings),
                                  base=preferences.defaults_from(settings))
    return Rules(Policy(thresholds(settings)), watched.current, watched=watched)


def _guarded(probes: list[tuple[str, Probe, bool]]) -> list[Guarded]:
    return [Guarded(name, probe, timeout=PROBE_TIMEOUT if blocking else None)
            for name, probe, blocking in probes]


def _file_openers(files: Iterable[tuple[Path, str, str]]) -> list[tuple[str, Any]]:
    """Event sources on files replaced by rename (inotify on their folders; Linux)."""
    if sys.platform != "linux":
        return []
    from worker.idle._inotify import FileEvents

    return [(name, lambda p=path, n=name, k=kind: FileEvents.open(str(p), name=n, kind=k))
            for path, name, kind in files]


def file_sampler(path: Path, preferences_path: Path | None = None) -> FileSampler:
    """The host's sensor file, re-read the moment the sensor replaces it (inotify on its
    folder, Linux: a container's worker is Linux), else polled; an edit of the
    preferences file wakes the loop too."""
    files = [(path, "sensor-file", "state")]
    if preferences_path is not None:
        files.append((preferences_path, "preferences", "settings"))
    return FileSampler(path, events=open_events(_file_openers(files)))


def input_events(preferences_path: Path | None = None) -> Wake:
    """This OS's input-event sources (XInput2, inotify, logind), or an inactive Wake (poll);
    an edit of the preferences file wakes the loop too where input events are watched."""
    extra = [] if preferences_path is None else \
        _file_openers([(preferences_path, "preferences", "settings")])
    return open_events([*backend.current.input_event_openers(), *extra])


def local_sampler(settings: Settings,
                  roots: Callable[[], Iterable[int]] = lambda: [os.getpid()], *,
                  events: Wake | bool = True) -> Sampler:
    """Every local signal, excluding the process trees under ``roots`` (the worker).

    ``events`` True opens this OS's input-event sources (:func:`input_events`;
    False: poll input). The sampler carries them (``Sampler.events``) and a
    :class:`~worker.idle.monitor.Monitor` built on it waits on them. With
    active events the input signal is read at every tick (the loop ticks only
    at the slow interval or on input) and the events are one more input
    probe: "input 2 ms ago" on the tick an event caused; while they are armed
    the polled input probes are asked only every ``EVENT_REFRESH`` seconds.
    """
    wake = input_events(preferences_file(settings)) if events is True else (events or None)
    catalog = ProcessCatalog()
    own = OwnProcesses(roots=roots, uids=[int(uid) for uid in settings.own_uids],
                       catalog=catalog)
    cpu = OthersCpu(own, window=settings.cpu_window)
    gpu = OthersGpu(own)
    memory = OthersMemory(own)
    exclusive = ExclusivePrograms(settings.exclusive_programs, catalog, own)
    event_driven = wake is not None and wake.active
    inputs = InputIdle(_guarded(backend.current.input_probes()))
    if wake is not None and event_driven:
        inputs = InputIdle(inputs.probes, armed=lambda: wake.armed,
                           events=Guarded("events", wake.input_idle, timeout=None,
                                          retry_unknown=0.0))
    lock = ScreenLock(_guarded(backend.current.lock_probes()))
    gpu_probe = Guarded("nvml", gpu.measure, timeout=2.0, retry_unknown=60.0)
    poll, sample = settings.poll_interval, settings.sample_interval
    signals = [  # exclusive first: it refreshes the catalogue the others rely on
        Signal("exclusive", lambda _now: exclusive.measure(), 5 * sample),
        Signal("input_idle", lambda _now: inputs.measure(), 0.0 if event_driven else poll),
        Signal("screen_locked", lambda _now: lock.measure(), sample),
        Signal("others_cpu", cpu.measure, sample),
        Signal("others_gpu", lambda _now: gpu_probe(), sample),
        Signal("others_memory", lambda _now: memory.measure(), 2 * sample),
        battery_signal(10 * sample),
    ]

    def details() -> dict[str, object]:
        shown: dict[str, object] = {"gpus": gpu.devices, "cpu_window": settings.cpu_window}
        if wake is not None:
            shown.update(wake.describe())
        if wake is None or not wake.active:
            shown["input_events"] = f"none (polling input every {poll:g} s)"
        return shown

    return Sampler(signals, details=details, events=wake)
