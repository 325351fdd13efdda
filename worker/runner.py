"""Start one idle-gated Celery worker in this process from :class:`~compute.settings.Settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery.utils.nodenames import default_nodename, host_format

from compute import keys, namespace, redis_clients, signing
from compute.app import create_app
from compute.base import BaseTask
from compute.errors import ConfigError
from compute.settings import Settings
from worker import capabilities, celery_gate, fleet_mode, preferences, scratch
from worker.celery_gate import CeleryActuator, install_gate, install_scratch
from worker.control_page import ControlPage
from worker.gate import Gate
from worker.idle.detector import file_sampler, local_sampler, preferences_file, rules_for
from worker.idle.monitor import Monitor
from worker.memory_cap import CapWatcher
from worker.owner_loop import OwnerLoop
from worker.pool_follow import PoolFollower
from worker.status import Publisher
from worker.volunteer_rules import Rules


def node_name(name: str) -> str:
    """The Celery node name a worker started with ``--name name`` takes.

    ``NAME@HOST`` is used as given; a bare ``NAME`` gets ``@`` and the host
    name, as ``celery multi`` names its nodes. ``%h``, ``%n`` and ``%d`` expand.
    """
    if "@" not in name:
        name = f"{name}@%h"
    return host_format(default_nodename(name))


def pool_size(settings: Settings, cores: int) -> int:
    """Pool processes: ``--concurrency``, else a volunteer's share of the cores
    (``[usage] max_cpus_percent``), else one per core."""
    if settings.concurrency is not None:
        return settings.concurrency
    if settings.mode != "volunteer":
        return cores
    try:
        prefs = preferences.load(preferences_file(settings), preferences.defaults_from(settings))
        return prefs.cores(cores)
    except preferences.PreferencesError as exc:
        raise ConfigError(str(exc)) from None


def monitor_for(settings: Settings, rules: Rules | None = None) -> Monitor | None:
    """The owner detector: the host's sensor file, the local signals, or none (dedicated)."""
    if settings.mode == "dedicated":
        return None
    decide = rules or rules_for(settings)
    if settings.sensor_file:
        sampler = file_sampler(Path(settings.sensor_file), preferences_file(settings))
        return Monitor(sampler, decide)  # type: ignore[arg-type]
    main = os.getpid()  # the worker and its pool are never the owner
    return Monitor(local_sampler(settings, roots=lambda: [main]), decide)  # type: ignore[arg-type]


def owner_loop(settings: Settings, node: str, queues: tuple[str, ...],
               hardware: capabilities.Hardware) -> OwnerLoop:
    client = redis_clients.connect(settings.backend_url,
                                   settings.redis_options(settings.backend_url))
    static: dict[str, Any] = {
        "node": node, "pid": os.getpid(), "host": settings.host, "mode": settings.mode,
        "region": settings.region,
        "queues": list(queues), "sensor": settings.sensor, "hardware": hardware.to_json(),
        "concurrency": pool_size(settings, hardware.cores),
        "volunteer": namespace.volunteer_of(settings.broker_url),
    }
    gate = Gate(CeleryActuator(), queues,
                emergency_queues=fleet_mode.emergency_queues(settings.region))
    rules = rules_for(settings) if settings.mode == "volunteer" else None
    caps = None
    if rules is not None:  # the volunteer's caps: memory and scratch disk per task
        current = rules.watched.current if rules.watched is not None else lambda: rules.prefs
        caps = CapWatcher(gate, current, scratch_root=scratch.root_for(node),
                          on_end=celery_gate.not_here_again,
                          on_change=celery_gate.caps_changed)
    loop = OwnerLoop(gate, monitor_for(settings, rules),
                     Publisher(lambda: client, node, settings.status_interval,
                               settings.namespace),
                     static=static, fast=settings.poll_interval, slow=settings.sample_interval,
                     report_every=settings.status_interval,
                     fleet_mode=lambda: fleet_mode.read(client, settings.namespace),
                     emergency_when_busy=settings.allow_emergency_when_busy, rules=rules,
                     extra=caps.document if caps is not None else dict)
    if caps is not None:
        loop.services.append(caps)
        if settings.concurrency is None:  # the pool follows max_cpus_percent; the flag wins
            loop.services.append(PoolFollower(caps.prefs, hardware.cores, static["concurrency"],
                                              gate.actuator.resize_pool))
    if rules is not None and rules.watched is not None and rules.prefs.control_port:
        credit_key = settings.namespace + keys.credit(node)
        loop.services.append(ControlPage(loop, rules.watched, rules.prefs.control_port,
                                         credit=lambda: client.hgetall(credit_key)))
    return loop


def require_checked_tasks(app: Any, trusted_key: str) -> None:
    """Signing on: the key must load, and every task must check signatures (a BaseTask)."""
    signing.load_public(trusted_key)
    app.loader.import_default_modules()
    unchecked = sorted(name for name, task in app.tasks.items() if not isinstance(task, BaseTask))
    if unchecked:
        raise ConfigError("IDLE_ACCEL_TRUSTED_KEY is set, but these tasks do not derive from "
                          "compute.base.BaseTask and would run unsigned: " + ", ".join(unchecked))


def run_worker(settings: Settings) -> int:
    """Run a worker in the foreground until it is stopped; return its exit code.

    SIGTERM is a warm shutdown: no new task is taken, running ones finish,
    suspended ones go back to the queue.
    """
    app = create_app(settings)
    node = node_name(settings.name)
    hardware = capabilities.measure()
    queues = capabilities.queues_for(settings.queues, hardware, settings.region,
                                     team=settings.mode == "dedicated")
    install_gate(app, owner_loop(settings, node, queues, hardware))
    if settings.mode == "volunteer":
        install_scratch(scratch.root_for(node))  # before the pool starts: its processes inherit it
    # Each pool process gets its share of the cores: engines that use every
    # core per process (torch, Cycles) would otherwise fight over them.
    # (Several workers on one machine, as in the benchmarks: set it yourself.)
    concurrency = pool_size(settings, hardware.cores)
    threads = max(1, hardware.cores // concurrency)
    threads = int(os.environ.setdefault("IDLE_ACCEL_TASK_THREADS", str(threads)))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    options = {
        "hostname": node,
        "queues": list(queues),
        "loglevel": settings.log_level,
        "pool_cls": "prefork",
        # Gossip makes every worker follow every other worker's events and
        # mingle asks them all at start: both grow with the square of a fleet
        # of volunteers and nothing here uses them. Remote control stays on.
        "without_gossip": True,
        "without_mingle": True,
    }
    options["concurrency"] = concurrency
    if settings.trusted_key:
        require_checked_tasks(app, settings.trusted_key)
    worker = app.Worker(**options)
    worker.start()
    return int(worker.exitcode or 0)
