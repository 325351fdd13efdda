"""Regions on separate brokers: the team's Redis, two regional Redis servers, one coordinator each.

Real parts only: three ``redis-server`` processes on loopback ports, a real
``idle-accel coordinator --region R`` per region (its Redis from
``IDLE_ACCEL_REGION_REDIS_URL``), volunteers enrolled on their region's Redis
running real ``idle-accel worker`` processes that never reach the team's
Redis. The team submits with plain Celery to its own Redis. One world per
module (starting workers is the slow part); the region-loss test runs last
and kills the eu-west region.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery

from compute import keys, verify
from compute.app import create_app
from compute.coordinator import registry
from compute.settings import Settings
from worker import credit
from worker.local.redis_server import RedisServer
from worker.local.worker_process import cli_command
from worker.status import read_fleet

from .conftest import STARTED_WORKERS
from .enrolled import Fleet
from .waiting import wait_for

TIMEOUT = 60
EU, US = "eu-west", "us-east"
COORDINATOR_ARGS = ("--region-timeout", "3")
WORKER_ARGS = ("--status-interval", "0.5")


@dataclass
class World:
    team: RedisServer
    app: Celery
    eu: Fleet
    us: Fleet
    base: Path

    def team_env(self) -> dict[str, str]:
        return {**os.environ, "CELERY_BROKER_URL": self.team.url(0),
                "CELERY_RESULT_BACKEND": self.team.url(0)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("regions")
    servers = [RedisServer(base / f"redis-{name}") for name in ("team", EU, US)]
    fleets: list[Fleet] = []
    app = None
    try:
        for server in servers:
            server.start()
        team, eu_redis, us_redis = servers
        app = create_app(Settings.load(broker_url=team.url(0)))
        for server, region in ((eu_redis, EU), (us_redis, US)):
            (base / region).mkdir()
            fleets.append(Fleet(server, base / region, team=team, region=region))
        eu, us = fleets
        eu.coordinator(*COORDINATOR_ARGS)
        us.coordinator(*COORDINATOR_ARGS)
        eu.worker("eu1", *WORKER_ARGS)
        us.worker("us1", *WORKER_ARGS)
        yield World(team, app, eu, us, base)
    finally:
        for found in fleets:
            found.stop()
        if app is not None:
            app.close()
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, world: World) -> None:
    request.node.stash[STARTED_WORKERS] = [*world.eu.started, *world.us.started]


def noop(world: World, n: int, **options) -> list:
    with world.app.producer_or_acquire() as producer:
        return [world.app.signature("compute.diag.noop").apply_async(producer=producer,
                                                                     **options)
                for _ in range(n)]


def hosts(results: list) -> set[str]:
    return {r.get(timeout=TIMEOUT)["hostname"] for r in results}


def fleet_doc(world: World, node: str) -> dict:
    with world.team.client() as client:
        return next((d for d in read_fleet(client) if d["node"] == node), {})


def test_pinned_work_runs_only_in_its_region_and_enrollment_is_regional(world: World) -> None:
    eu_pinned = noop(world, 8, queue=f"cpu@{EU}")
    us_pinned = noop(world, 8, queue=f"cpu@{US}")
    assert hosts(eu_pinned) == {"eu1@h"}
    assert hosts(us_pinned) == {"us1@h"}

    # The team's Redis holds no volunteer, no namespace and no ledger; each region its own.
    with world.team.client() as team, world.eu.broker.client() as eu:
        assert not team.exists(keys.VOLUNTEERS) and not list(team.scan_iter(match="vol:*"))
        assert not team.exists(keys.COORDINATOR_LOCK)
        assert set(registry.records(eu)) == {"eu1"}
        assert team.smembers(keys.REGIONS) == {EU.encode(), US.encode()}

    # `idle-accel volunteer enroll --region`, the regional URL from a file: user, record and
    # the URL it prints are the region's.
    url_file = world.base / "eu-url"
    url_file.write_text(world.eu.broker.url(0))
    done = subprocess.run(
        [*cli_command(), "volunteer", "enroll", "eu2", "--region", EU, "--json"],
        env={**world.team_env(), "IDLE_ACCEL_REGION_REDIS_URL_FILE": str(url_file)},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    enrolled = json.loads(done.stdout)
    assert urlsplit(enrolled["broker_url"]).port == world.eu.broker.port
    with redis.Redis.from_url(enrolled["broker_url"]) as as_volunteer:
        assert as_volunteer.ping()
    with world.team.client() as team, world.eu.broker.client() as eu:
        assert registry.records(eu)["eu2"]["region"] == EU
        assert not team.hexists(keys.VOLUNTEERS, "eu2")
        assert team.hexists(keys.VOLUNTEER_NAMES, "eu2")  # the name is the fleet's
    # Names are fleet-wide (credit and status go by name): eu2 cannot be enrolled again in
    # another region; again in its own it can (a new password).
    us_file = world.base / "us-url"
    us_file.write_text(world.us.broker.url(0))
    for url, region, ok in ((us_file, US, False), (url_file, EU, True)):
        again = subprocess.run(
            [*cli_command(), "volunteer", "enroll", "eu2", "--region", region, "--json"],
            env={**world.team_env(), "IDLE_ACCEL_REGION_REDIS_URL_FILE": str(url)},
            capture_output=True, text=True, timeout=60)
        assert (again.returncode == 0) == ok, again.stderr
        if not ok:
            assert "'eu2' is already enrolled in region eu-west" in again.stderr
    with world.us.broker.client() as us, world.eu.broker.client() as eu:
        assert "eu2" not in registry.records(us)
        registry.disable(eu, "eu2", "test over")

    # A volunteer on eu-west's Redis enrolled for us-east is refused by eu-west's coordinator,
    # even when it says it is idle and consumes us-east's queue.
    with world.eu.broker.client() as eu:
        registry.enroll(eu, world.eu.broker.url(0), "stray", region=US)
        eu.set(f"vol:stray:{keys.worker('stray@sim')}", json.dumps(
            {"node": "stray@sim", "at": time.time(), "state": "idle", "concurrency": 4,
             "queues": ["cpu", f"cpu@{US}"], "consuming": ["cpu", f"cpu@{US}"]}))
        coordinator = world.eu.coordinators[0]
        wait_for(lambda: "volunteer stray is enrolled in region us-east" in
                 coordinator.log_text(), 10, what="stray refused")
        assert hosts(noop(world, 6, queue=f"cpu@{US}")) == {"us1@h"}
        assert eu.scard(keys.assigned("stray")) == 0
        registry.disable(eu, "stray", "test over")


def test_unpinned_work_flows_to_the_region_with_idle_volunteers(world: World) -> None:
    owner = world.eu.volunteers["eu1"].owner
    owner.busy()
    try:
        wait_for(lambda: fleet_doc(world, "eu1@h").get("state") == "busy", 20,
                 what="eu1's owner busy, as the team sees it")
        assert hosts(noop(world, 12)) == {"us1@h"}
    finally:
        owner.idle()
    wait_for(lambda: fleet_doc(world, "eu1@h").get("state") == "idle", 20,
             what="eu1's owner away again")
    with world.app.producer_or_acquire() as producer:
        both = [world.app.signature("compute.diag.sleep", (0.3,)).apply_async(
            producer=producer) for _ in range(16)]
    assert hosts(both) == {"eu1@h", "us1@h"}


def switch(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), "fleet", "emergency", *args], env=world.team_env(),
                          capture_output=True, text=True, timeout=60)


def test_emergency_credit_and_verification_span_regions(world: World) -> None:
    assert switch(world, "on").returncode == 0
    try:
        for node, region in (("eu1@h", EU), ("us1@h", US)):
            wait_for(lambda n=node, r=region: fleet_doc(world, n).get("consuming") ==
                     ["emergency", f"emergency@{r}"], 20, what=f"{node} serving emergency")
        normal = noop(world, 1)[0]
        assert hosts(noop(world, 2, queue=f"emergency@{EU}")) == {"eu1@h"}
        assert hosts(noop(world, 2, queue=f"emergency@{US}")) == {"us1@h"}
        assert hosts(noop(world, 4, queue="emergency")) <= {"eu1@h", "us1@h"}
        assert normal.state == "PENDING"  # ordinary work waits, in every region
    finally:
        assert switch(world, "off").returncode == 0
    assert normal.get(timeout=TIMEOUT)["hostname"] in ("eu1@h", "us1@h")

    # verify=2: one replica per volunteer, so one in each region; outcomes and verdict on
    # the team's Redis.
    checked = [world.app.signature("compute.diag.checksum", (f"r{i}",)).apply_async(verify=2)
               for i in range(3)]
    for result in checked:
        assert result.get(timeout=TIMEOUT)["sha256"]
    with world.team.client() as team:
        for result in checked:
            report = verify.report(team, result.id)
            assert sorted(r["host"] for r in report["replicas"]) == ["eu1", "us1"]
            assert report["verdict"]["agreed"]

        def credited() -> dict:
            rows = {row["node"]: row["tasks"] for row in credit.table(team)}
            return rows if rows.get("eu1", 0) >= 3 and rows.get("us1", 0) >= 3 else {}

        rows = wait_for(credited, 20, what="credit on the team's Redis for both regions")
        print(f"credit on the team's Redis: {rows}")
    with world.eu.broker.client() as eu:
        assert not list(eu.scan_iter(match=keys.CREDIT_PATTERN))


def _stats(world: World, region: str) -> dict[str, int]:
    with world.team.client() as team:
        return {k.decode(): int(v) for k, v in team.hgetall(keys.region_stats(region)).items()}


def test_a_late_result_from_a_region_declared_dead_does_not_overwrite_the_team_result(
        world: World) -> None:
    """eu-west's coordinator freezes past --region-timeout while eu1 runs a task: us-east's
    coordinator pushes it back, us1 runs it and its result is stored; eu-west thaws, accepts
    eu1's copy and discards it (the team already has one)."""
    us_owner = world.us.volunteers["us1"].owner
    us_owner.busy()
    try:
        wait_for(lambda: fleet_doc(world, "us1@h").get("state") == "busy", 20,
                 what="us1's owner busy")
        result = world.app.signature("compute.diag.sleep", (2,)).delay()
        wait_for(lambda: result.state == "STARTED" and result.info.get("hostname") == "eu1@h",
                 TIMEOUT, what="the task started on eu1")
        dead_before = _stats(world, EU).get("declared_dead", 0)
        coordinator = world.eu.coordinators[0]
        coordinator.signal(signal.SIGSTOP)
    finally:
        us_owner.idle()
    try:
        wait_for(lambda: _stats(world, EU).get("declared_dead", 0) > dead_before, 20,
                 what="eu-west declared dead")
        assert result.get(timeout=TIMEOUT)["hostname"] == "us1@h"
        wait_for(lambda: f"sleep[{result.id}] succeeded" in
                 world.eu.volunteers["eu1"].worker.log_text(), 20, what="eu1's copy done")
    finally:
        coordinator.signal(signal.SIGCONT)
    wait_for(lambda: f"[{result.id}] ran twice" in coordinator.log_text(), 20,
             what="eu-west discarding its late copy")
    assert world.app.AsyncResult(result.id).get(timeout=5)["hostname"] == "us1@h"


def test_losing_a_region_loses_none_of_its_tasks(world: World) -> None:
    dead_before = _stats(world, EU).get("declared_dead", 0)
    recovered_before = _stats(world, EU).get("recovered", 0)
    with world.app.producer_or_acquire() as producer:
        results = [world.app.signature("compute.diag.sleep", (0.4,)).apply_async(
            producer=producer) for _ in range(30)]
    with world.eu.broker.client() as eu:
        wait_for(lambda: sum(r.ready() for r in results) >= 4 and
                 eu.zcard(keys.ASSIGNMENTS) >= 1, TIMEOUT, what="eu-west running some")
    # kill -9 the region: its coordinator and its Redis, mid-run.
    world.eu.coordinators[0].kill()
    world.eu.broker._process.kill()  # no public kill: SIGKILL on purpose
    killed = time.monotonic()
    done = [r.get(timeout=TIMEOUT) for r in results]
    print(f"every task done {time.monotonic() - killed:.1f} s after eu-west was killed")
    assert len(done) == 30
    assert {d["hostname"] for d in done} <= {"eu1@h", "us1@h"}

    stats = _stats(world, EU)
    assert stats.get("declared_dead") == dead_before + 1
    recovered = stats.get("recovered", 0) - recovered_before
    with world.team.client() as team:
        assert not team.exists(keys.region_out(EU))
        assert team.hlen(keys.region_out(US)) == 0
    # Ran twice: received by eu1 before the region died, and finished by us1 after.
    eu_log = world.eu.volunteers["eu1"].worker.log_text()
    twice = [r.id for r, d in zip(results, done, strict=True)
             if d["hostname"] == "us1@h" and f"[{r.id}] received" in eu_log]
    print(f"eu-west held {recovered} task(s) when it died: pushed back to the "
          f"team's queues; {len(twice)} had reached eu1 and so ran (or began) twice")
    assert recovered >= 1
    assert len(twice) <= recovered
    world.eu.volunteers["eu1"].worker.kill()  # its broker is gone: no graceful stop to wait for
