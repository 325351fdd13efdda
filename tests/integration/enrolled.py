"""Helpers for tests through the trust boundary: enrolled volunteers and a real coordinator.

``Fleet`` enrolls volunteers on the test's Redis (as its admin), starts
``idle-accel coordinator`` and volunteer workers through the project's CLI,
each worker logging in as its own ``vol-NAME`` user with nothing but that
broker URL, and an owner who is away (a sensor file the test controls).

A regional ``Fleet`` (``team`` and ``region`` given) is one region on its own
Redis (``broker``): its coordinator runs with ``--region`` and the team's Redis
as its broker, and its volunteers are enrolled in that region.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from compute.coordinator import registry
from worker.local.coordinator_process import CoordinatorProcess
from worker.local.redis_server import RedisServer
from worker.local.worker_process import WorkerProcess

from .gating import Owner

#: Fast enough for tests: sweeps every 0.3 s, dropped work reissued after 1.5 s.
TEST_COORDINATOR_ARGS = ("--sweep-interval", "0.3", "--missing-grace", "1.5",
                         "--lease-timeout", "8")


@dataclass
class Volunteer:
    name: str
    url: str
    owner: Owner
    worker: WorkerProcess | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@h"


@dataclass
class Fleet:
    broker: RedisServer
    tmp: Path
    started: list = field(default_factory=list)
    volunteers: dict[str, Volunteer] = field(default_factory=dict)
    coordinators: list[CoordinatorProcess] = field(default_factory=list)
    team: RedisServer | None = None  # a region's fleet: the team's Redis (broker: the region's)
    region: str | None = None

    def enroll(self, name: str, region: str | None = None) -> Volunteer:
        with self.broker.client() as client:
            found = registry.enroll(client, self.broker.url(0), name,
                                    region=region or self.region)
        volunteer = Volunteer(name, found.broker_url,
                              Owner.away(self.tmp / f"{name}.owner"))
        self.volunteers[name] = volunteer
        return volunteer

    def coordinator(self, *args: str, wait: bool = True) -> CoordinatorProcess:
        team = self.team or self.broker
        env = {"CELERY_BROKER_URL": team.url(0), "CELERY_RESULT_BACKEND": team.url(0)}
        if self.region:
            env["IDLE_ACCEL_REGION_REDIS_URL"] = self.broker.url(0)
            args = ("--region", self.region, *args)
        log_path = self.tmp / f"coordinator-{len(self.coordinators)}.log"
        process = CoordinatorProcess(env=env, args=[*TEST_COORDINATOR_ARGS, *args],
                                     log_path=log_path)
        self.coordinators.append(process)
        self.started.append(process)
        process.start()
        if wait:
            with self.broker.client() as client:
                process.wait_active(client)
        return process

    def worker(self, name: str, *args: str, region: str | None = None,
               wait: bool = True) -> WorkerProcess:
        volunteer = self.volunteers.get(name) or self.enroll(name, region)
        if self.region and "--region" not in args:
            args = ("--region", self.region, *args)
        process = WorkerProcess(volunteer.node, env={"CELERY_BROKER_URL": volunteer.url},
                                log_path=self.tmp / f"{name}.log",
                                args=["--sensor", volunteer.owner.flag, "--sensor-max-age", "0",
                                      "--idle-after", "0", "--concurrency", "1", *args])
        volunteer.worker = process
        self.started.append(process)
        process.start()
        if wait:
            with (self.team or self.broker).client() as client:  # republished: the team's
                # Taking work as the coordinator sees it: it places work only on those.
                process.wait_reported(client, volunteer.node, consuming=True)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            process.stop(timeout=20)


def credit_of(broker: RedisServer, name: str) -> dict[str, float]:
    from worker import credit

    with broker.client() as client:
        rows = {row["node"]: row for row in credit.table(client)}
    return rows.get(name, {"tasks": 0, "cpu_seconds": 0.0})


def wait_idle_coordinator(broker: RedisServer, timeout: float = 30.0) -> None:
    """Until the coordinator holds no assignment."""
    from compute import keys

    deadline = time.monotonic() + timeout
    with broker.client() as client:
        while time.monotonic() < deadline and client.zcard(keys.ASSIGNMENTS):
            time.sleep(0.05)
