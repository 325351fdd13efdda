"""Least-privilege Redis users (deploy/redis/users.acl) against a real redis-server and workers.

The shipped ACL file is rendered with generated passwords into a private
``redis-server`` (AOF on, as compose runs it). The admin enrolls volunteers
with the CLI (each its own ``vol-NAME`` user, confined to ``vol:NAME:*``);
``idle-accel coordinator`` runs as ``coordinator``; each volunteer's worker
runs with nothing but its own broker URL; the team's client, CLI and Flower
log in as ``team``. Every path (tasks, checkpoints and a resume, verified
results on two volunteers, a chord job, fleet commands and remote control
relayed by the coordinator, a volunteer's own remote control and container
healthcheck, Flower, a restart of a worker and of Redis, a volunteer disabled
over its quota, a revoked one) must leave ``ACL LOG`` empty but for what is
refused on purpose, and what each role must not do is refused with NOPERM.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from celery import Celery

from compute import keys, verify
from compute.app import create_app
from compute.coordinator.service import Config
from compute.errors import IdleAccelError
from compute.settings import Settings
from worker.local.coordinator_process import CoordinatorProcess
from worker.local.flower_process import FlowerProcess
from worker.local.redis_server import RedisServer, find_binary, version
from worker.local.worker_process import WorkerProcess, cli_command

from .conftest import STARTED_WORKERS
from .gating import Owner, fleet
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "redis" / "users.acl"
ROLES = ("admin", "team", "coordinator")
TIMEOUT = 45
MIB = 1024 * 1024
#: Sweeps every 0.3 s, dropped work reissued after 1.5 s; quotas checked every second, 4 MiB
#: per namespace (the volunteers' few tasks and results need far less). 64 connections, as
#: docker-compose.yml sets it: the default is below what an honest worker opens (see
#: test_an_honest_volunteer_stays_within_the_default_connection_quota).
COORDINATOR_ARGS = ("--sweep-interval", "0.3", "--missing-grace", "1.5",
                    "--quota-interval", "1", "--quota-bytes", str(4 * MIB),
                    "--max-connections", "64")


def strip_comments(template: str) -> str:
    """The template without its ``#`` comment lines (Redis ACL files have none)."""
    return "".join(line for line in template.splitlines(keepends=True)
                   if not line.startswith("#"))


def render(template: str, passwords: Mapping[str, str]) -> str:
    """The ACL file, each ``<ROLE>_PASSWORD_SHA256`` replaced by the hash of its password."""
    text = strip_comments(template)
    for role, password in passwords.items():
        digest = hashlib.sha256(password.encode()).hexdigest()
        text = text.replace(f"{role.upper()}_PASSWORD_SHA256", digest)
    assert "_PASSWORD_SHA256" not in text, "a role of the ACL file has no password"
    return text


def require_redis_7() -> None:
    """Selectors and ``%R~``/``%W~`` key permissions need Redis 7 (fail under CI, else skip)."""
    binary = find_binary()
    found = version(binary)
    if found >= (7,):
        return
    message = (f"{binary} is not Redis 7 or later ({found or 'unknown version'}); "
               "the ACL file needs it")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def denials(client: redis.Redis) -> list[str]:
    """Every ``ACL LOG`` entry as one line: user, what was refused, and the command."""
    lines = []
    for entry in client.acl_log(count=1000):
        info = entry.get("client-info")
        command = info.get("cmd") if isinstance(info, dict) else ""
        lines.append(f"{entry['username']}: {entry['reason']} {entry['object']!r} "
                     f"in {entry['context']} (cmd={command}, count={entry['count']})")
    return lines


@dataclass
class AclFleet:
    """A redis-server with the shipped users, a coordinator, enrolled volunteers, the team."""

    server: RedisServer
    passwords: dict[str, str]
    directory: Path
    app: Celery | None = None
    coordinator: CoordinatorProcess | None = None
    urls: dict[str, str] = field(default_factory=dict)  # volunteer -> its broker URL
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    owners: dict[str, Owner] = field(default_factory=dict)
    startup: list[str] = field(default_factory=list)  # ACL LOG once everything was up

    def url(self, role: str) -> str:
        return self.server.url(0, user=role, password=self.passwords[role])

    def env(self, role: str) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.url(role), "CELERY_RESULT_BACKEND": self.url(role)}

    def client(self, role: str = "admin") -> redis.Redis:
        return self.server.client(user=role, password=self.passwords[role])

    def cli(self, *args: str, role: str = "team", env: Mapping[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
        return subprocess.run([*cli_command(), *args],
                              env={**clean, **(env if env is not None else self.env(role))},
                              capture_output=True, text=True, timeout=timeout)

    def enroll(self, name: str, region: str | None = None) -> str:
        """``idle-accel volunteer enroll NAME --json`` as the admin: the volunteer's URL."""
        done = self.cli("volunteer", "enroll", name, "--json",
                        *(("--region", region) if region else ()), role="admin")
        assert done.returncode == 0, done.stdout + done.stderr
        found = json.loads(done.stdout)
        assert found["name"] == name and found["namespace"] == f"vol:{name}:"
        assert found["broker_url"].startswith(f"redis://vol-{name}:")
        self.urls[name] = found["broker_url"]
        return found["broker_url"]

    def own(self, name: str) -> redis.Redis:
        """A client with volunteer ``name``'s credentials, and nothing else."""
        return redis.Redis.from_url(self.urls[name], socket_timeout=5)

    def own_app(self, name: str) -> Celery:
        """A Celery app on volunteer ``name``'s URL (its namespace: its own workers only)."""
        return create_app(Settings.load(broker_url=self.urls[name],
                                        result_backend=self.urls[name]))

    def volunteer(self, name: str, host: str, *args: str, region: str | None = None
                  ) -> WorkerProcess:
        """Start ``idle-accel worker`` with the volunteer's own URL only, its owner away."""
        if name not in self.urls:
            self.enroll(name, region)
        owner = self.owners[name] = Owner.away(self.directory / f"{name}.owner")
        process = WorkerProcess(
            name, env={"CELERY_BROKER_URL": self.urls[name]},
            log_path=self.directory / f"{name}.log",
            args=("--concurrency", "1", "--host-id", host, "--sensor", owner.flag,
                  "--sensor-max-age", "0", "--idle-after", "0",
                  *(("--region", region) if region else ()), *args))
        self.workers[name] = process
        process.start()
        own = self.own_app(name)
        try:
            process.wait_ready(own)  # its own remote control, in its namespace
        finally:
            own.close()
        with self.client() as admin:
            process.wait_reported(admin)  # the coordinator republished its report
        return process


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclFleet]:
    require_redis_7()
    directory = tmp_path_factory.mktemp("acl")
    passwords = {role: f"{role}-{os.urandom(12).hex()}" for role in ROLES}
    users = directory / "users.acl"
    users.write_text(render(TEMPLATE.read_text(), passwords))
    users.chmod(0o600)
    # DEBUG and MODULE are open to local connections, so that only the ACL refuses them.
    # Data kept across a restart (AOF), as docker-compose.yml runs it.
    server = RedisServer(directory / "redis", acl_file=users, user="admin",
                         password=passwords["admin"], appendonly=True,
                         extra_config=["enable-debug-command local", "enable-module-command local"])
    server.start()
    setup = AclFleet(server, passwords, directory)
    setup.app = create_app(Settings.load(broker_url=setup.url("team")))
    try:
        setup.coordinator = CoordinatorProcess(env=setup.env("coordinator"),
                                               args=COORDINATOR_ARGS,
                                               log_path=directory / "coordinator.log")
        setup.coordinator.start()
        with setup.client() as admin:
            setup.coordinator.wait_active(admin)
        setup.volunteer("acl-a", "machine-a", "--preempt-after", "1")
        setup.volunteer("acl-b", "machine-b")
        with setup.client() as admin:
            setup.startup = denials(admin)
        yield setup
    finally:
        for process in setup.workers.values():
            process.stop(timeout=20)
        if setup.coordinator is not None:
            setup.coordinator.stop(timeout=20)
        setup.app.close()
        server.stop()


@pytest.fixture
def admin(acl: AclFleet, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The admin's client, with ``ACL LOG`` emptied; process logs go to a failure's report."""
    request.node.stash[STARTED_WORKERS] = [acl.coordinator, *acl.workers.values()]
    with acl.client("admin") as client:
        client.acl_log_reset()
        yield client


def consuming(acl: AclFleet, name: str) -> list[str]:
    """What volunteer ``name``'s worker consumes, as the coordinator republished it."""
    return fleet(acl.server).get(acl.workers[name].node, {}).get("consuming", [])


def test_enrolling_and_starting_the_coordinator_and_volunteers_leave_no_denial(acl):
    assert acl.startup == []


def test_tasks_checkpoints_and_a_resume_leave_no_denial(acl, admin):
    first, second = acl.workers["acl-a"], acl.workers["acl-b"]
    assert acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"] in {
        first.node, second.node}

    # A burn on acl-a checkpoints in acl-a's namespace; its owner returns and it is
    # preempted; the coordinator takes it back; acl-a, idle again, resumes it from there.
    # (acl-b is busy throughout: its namespace cannot read acl-a's checkpoint.)
    acl.owners["acl-b"].busy()
    wait_for(lambda: consuming(acl, "acl-b") == [], what="acl-b stopped consuming")
    try:
        burn = acl.app.send_task("compute.diag.burn", [3.0])
        checkpoint = "vol:acl-a:" + keys.checkpoint(burn.id)
        wait_for(lambda: admin.exists(checkpoint), timeout=TIMEOUT,
                 what="checkpoint written by the volunteer in its namespace")
        acl.owners["acl-a"].busy()
        wait_for(lambda: admin.zscore(keys.ASSIGNMENTS, f"acl-a/{burn.id}") is None,
                 timeout=TIMEOUT, what="the burn taken back from acl-a")
        acl.owners["acl-a"].idle()
        done = burn.get(timeout=TIMEOUT)
    finally:
        acl.owners["acl-a"].idle()
        acl.owners["acl-b"].idle()

    assert done["hostname"] == first.node
    assert done["resumed_from"] > 0
    credit = wait_for(lambda: admin.hgetall(keys.credit("acl-a")), what="credit")
    assert int(credit[b"tasks"]) >= 1
    wait_for(lambda: consuming(acl, "acl-b"), what="acl-b consuming again")
    assert denials(admin) == []


def test_a_verified_task_runs_on_both_volunteers_with_no_denial(acl, admin):
    result = acl.app.signature("compute.diag.checksum", ("acl", 100)).apply_async(verify=2)

    digest = hashlib.sha256(b"acl").digest()
    for _ in range(99):
        digest = hashlib.sha256(digest).digest()
    assert result.get(timeout=TIMEOUT) == {"sha256": digest.hex(), "rounds": 100}
    report = verify.report(admin, result.id)
    assert sorted(r["host"] for r in report["replicas"]) == ["acl-a", "acl-b"]
    assert report["verdict"]["agreed"] is True
    assert denials(admin) == []


def test_a_chord_job_from_the_cli_assembles_with_no_denial(acl, admin, tmp_path):
    table = tmp_path / "sales.csv"
    table.write_text("country,amount\n" + "".join(f"c{i % 3},{i}\n" for i in range(3000)))
    output = tmp_path / "totals.csv"
    spec = {"group_by": ["country"], "aggregate": {"total": ["amount", "sum"]}}

    done = acl.cli("submit", "aggregate", str(table), "--output", str(output),
                   "--chunk-mb", "0.004", "--spec", json.dumps(spec))

    assert done.returncode == 0, done.stdout + done.stderr
    with output.open() as rows:
        totals = {row["country"]: int(float(row["total"])) for row in csv.DictReader(rows)}
    assert totals == {f"c{k}": sum(i for i in range(3000) if i % 3 == k) for k in range(3)}
    job = re.search(r"job ([0-9a-f-]{36})", done.stdout)
    assert job, done.stdout
    status = acl.cli("job", "status", job.group(1), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCESS"
    assert denials(admin) == []


def test_fleet_commands_as_team_and_a_volunteers_own_checks_with_no_denial(acl, admin):
    nodes = {process.node for process in acl.workers.values()}

    status = acl.cli("fleet", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert nodes <= {w["node"] for w in json.loads(status.stdout)["workers"]}

    # The team's switch reaches volunteers through the coordinator (their namespaces).
    on = acl.cli("fleet", "emergency", "on")
    try:
        # (How many answer within the CLI's 2 s varies: workers take about 2 s to answer
        # this command, also outside any namespace; the switch itself is what counts.)
        assert on.returncode == 0 and "fleet mode: EMERGENCY" in on.stdout, on.stderr
        wait_for(lambda: all(consuming(acl, n) == ["emergency"] for n in acl.workers),
                 timeout=TIMEOUT, what="the fleet on the emergency queue")
        urgent = acl.app.send_task("compute.diag.noop", queue="emergency")
        assert urgent.get(timeout=TIMEOUT)["hostname"] in nodes
    finally:
        off = acl.cli("fleet", "emergency", "off")
    assert off.returncode == 0, off.stderr
    wait_for(lambda: all("cpu" in consuming(acl, n) for n in acl.workers), timeout=TIMEOUT,
             what="back to cpu")

    credits = acl.cli("fleet", "credits", "--json")
    assert credits.returncode == 0, credits.stderr
    assert {"acl-a", "acl-b"} & {row["node"] for row in json.loads(credits.stdout)["credits"]}

    # The team's remote control, relayed into the namespaces by the coordinator.
    ping = subprocess.run([sys.executable, "-m", "celery", "-A", "compute.app", "inspect",
                           "ping", "--timeout", "5"], env={**os.environ, **acl.env("team")},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ping.returncode == 0 and all(f"{n}: OK" in ping.stdout for n in nodes), ping.stdout

    # Each volunteer: the container healthcheck and remote control of its own worker.
    for name, process in acl.workers.items():
        own = {"CELERY_BROKER_URL": acl.urls[name]}
        health = acl.cli("ping", "--from-status", "--name", process.node, env=own)
        assert health.returncode == 0 and "reporting" in health.stdout, health.stderr
        pong = acl.cli("ping", "--name", process.node, env=own)
        assert pong.returncode == 0 and "pong" in pong.stdout, pong.stderr
    assert denials(admin) == []


def flower_alive(flower) -> set[str]:
    """Nodes Flower counts alive: from the worker events the coordinator relays."""
    status, body = flower.get("/api/workers?status=1", timeout=20)
    return {n for n, up in json.loads(body).items() if up} if status == 200 else set()


def test_flower_as_team_sees_the_volunteers_with_no_denial(acl, admin):
    flower = FlowerProcess(env=acl.env("team"), log_path=acl.directory / "flower.log")
    flower.start()
    try:
        flower.wait_ready()
        nodes = {process.node for process in acl.workers.values()}

        def listed() -> set[str]:  # Flower's inspect, relayed by the coordinator
            status, body = flower.get("/api/workers?refresh=1", timeout=20)
            return set(json.loads(body)) if status == 200 else set()

        wait_for(lambda: nodes <= flower_alive(flower), timeout=TIMEOUT, every=1,
                 what="workers in Flower")
        wait_for(lambda: nodes <= listed(), timeout=TIMEOUT, every=1, what="inspected by Flower")
        status, body = flower.get("/api/queues/length", timeout=20)
    finally:
        flower.stop()
    assert status == 200 and "cpu" in {q["name"] for q in json.loads(body)["active_queues"]}
    assert denials(admin) == []


def test_flower_as_team_sees_the_tasks_volunteers_ran(acl, admin):
    """The coordinator relays a volunteer's task events too (compute/coordinator/relay.py)."""
    flower = FlowerProcess(env=acl.env("team"), log_path=acl.directory / "flower-tasks.log")
    flower.start()
    try:
        flower.wait_ready()
        # Flower answers HTTP before its event receiver is subscribed, and events
        # sent before that are gone (a fanout): wait until it has heard the
        # volunteers' heartbeats through the coordinator, then run the task.
        nodes = {process.node for process in acl.workers.values()}
        wait_for(lambda: nodes <= flower_alive(flower), timeout=TIMEOUT, every=1,
                 what="workers in Flower")
        ran = acl.app.send_task("compute.diag.noop")
        node = ran.get(timeout=TIMEOUT)["hostname"]

        def worker_of_the_task() -> str | None:
            status, body = flower.get(f"/api/task/info/{ran.id}", timeout=20)
            return json.loads(body).get("worker") if status == 200 else None

        wait_for(lambda: worker_of_the_task() == node, timeout=20, every=1,
                 what="the task's volunteer in Flower")
    finally:
        flower.stop()
    assert denials(admin) == []


def test_a_restarted_volunteer_serves_its_region_with_no_denial(acl, admin):
    pinned = acl.app.signature("compute.diag.noop").set(queue="cpu@acl-region")
    worker = acl.volunteer("acl-c", "machine-c", region="acl-region")
    assert pinned.delay().get(timeout=TIMEOUT)["hostname"] == worker.node

    assert worker.stop(timeout=20) == 0
    worker = acl.volunteer("acl-c", "machine-c", region="acl-region")
    own = acl.own_app("acl-c")
    try:
        # Held across a lease period (5 s): the renewal (ZADD XX unacked_index) is allowed.
        slept = acl.app.signature("compute.diag.sleep", (5.5,)).set(queue="cpu@acl-region")
        assert slept.delay().get(timeout=TIMEOUT)["hostname"] == worker.node
        for app in (acl.app, own):  # the team's (relayed) and the volunteer's own inspect
            stats = app.control.inspect(destination=[worker.node], timeout=5).stats()
            assert stats[worker.node]["leases"]["renewed"] >= 1
            assert stats[worker.node]["leases"]["lost"] == []
    finally:
        own.close()
        assert worker.stop(timeout=20) == 0
        del acl.workers["acl-c"]
    assert denials(admin) == []


def test_the_coordinator_disables_a_volunteer_over_its_quota_with_no_denial(acl, admin):
    acl.enroll("acl-hog")
    hog = acl.own("acl-hog")
    hog.set("vol:acl-hog:blob", b"x" * (5 * MIB))  # its own namespace: allowed, over quota

    record = wait_for(lambda: json.loads(admin.hget(keys.VOLUNTEERS, "acl-hog") or "{}")
                      .get("state") == "disabled"
                      and json.loads(admin.hget(keys.VOLUNTEERS, "acl-hog")),
                      timeout=TIMEOUT, what="the hog disabled by the coordinator")
    assert "quota" in record["reason"]
    assert "off" in admin.acl_getuser("vol-acl-hog")["flags"]  # ACL SETUSER off
    wait_for(lambda: not admin.exists("vol:acl-hog:blob"), what="its keys removed")
    with pytest.raises(redis.RedisError):  # its connection was dropped (CLIENT KILL)
        hog.execute_command("PING")
    hog.close()
    with acl.own("acl-hog") as again, pytest.raises(redis.AuthenticationError):
        again.ping()
    # The only entries: its own refused logins. The coordinator and the others: nothing.
    assert all(re.match(r"vol-acl-hog: auth '(AUTH|HELLO)' in toplevel", line)
               for line in denials(admin)), denials(admin)
    # The others go on.
    assert acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"] in {
        process.node for process in acl.workers.values()}


def connections(admin: redis.Redis, name: str) -> int:
    """Volunteer ``name``'s open connections, counted as the coordinator counts them."""
    return sum(1 for entry in admin.client_list() if entry.get("user") == f"vol-{name}")


def test_an_honest_volunteer_stays_within_the_default_connection_quota(acl, admin):
    """A worker as docker-compose.yml runs it (2 pool processes) and its container
    healthcheck must not exceed the coordinator's default quota, or it is disabled."""
    worker = acl.volunteer("acl-d", "machine-d", "--concurrency", "2", region="acl-d-region")
    try:
        pinned = [acl.app.signature("compute.diag.sleep", (1.0,)).set(queue="cpu@acl-d-region")
                  .delay() for _ in range(6)]
        assert {r.get(timeout=TIMEOUT)["hostname"] for r in pinned} == {worker.node}
        held = connections(admin, "acl-d")  # its main process and both pool processes
        health = acl.cli("ping", "--from-status", "--name", worker.node,
                         env={"CELERY_BROKER_URL": acl.urls["acl-d"]})
        assert health.returncode == 0, health.stderr
    finally:
        assert worker.stop(timeout=20) == 0
        del acl.workers["acl-d"]
    assert held + 1 <= Config().max_connections, (
        f"an honest worker with 2 pool processes holds {held} connections, and its "
        f"healthcheck opens one more: over the default quota of {Config().max_connections} "
        "(compute/coordinator/service.py, Config.max_connections)")
    assert denials(admin) == []


def test_a_revoked_volunteer_is_locked_out(acl, admin):
    acl.enroll("acl-gone")
    with acl.own("acl-gone") as gone:
        assert gone.set("vol:acl-gone:x", "1")
        revoked = acl.cli("volunteer", "revoke", "acl-gone", role="admin")
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(redis.RedisError):
            gone.execute_command("PING")
    listed = acl.cli("volunteer", "list", "--json", role="admin")
    assert json.loads(listed.stdout)["acl-gone"]["state"] == "disabled"
    wait_for(lambda: not admin.exists("vol:acl-gone:x"), what="its keys removed")
    with acl.own("acl-gone") as again, pytest.raises(redis.AuthenticationError):
        again.ping()


# What a volunteer's credentials may not reach: anything outside vol:acl-a:*.
VOLUNTEER_REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
    ("DEBUG", "SLEEP", "0"), ("KEYS", "*"), ("KEYS", "vol:acl-a:*"), ("SCAN", "0"),
    ("SCAN", "0", "MATCH", "vol:acl-a:*"), ("ACL", "LIST"), ("ACL", "WHOAMI"),
    ("ACL", "SETUSER", "vol-acl-a", "~*"), ("ACL", "LOG"), ("MODULE", "LIST"),
    ("CLIENT", "LIST"), ("CLIENT", "KILL", "USER", "vol-acl-b"), ("MONITOR",), ("INFO",),
    ("SHUTDOWN", "NOSAVE"), ("RANDOMKEY",),
    # the team's queues and kombu's bookkeeping of them
    ("LLEN", "cpu"), ("RPOP", "cpu"), ("LPUSH", "cpu", "{}"), ("LPUSH", "emergency", "{}"),
    ("HGETALL", "unacked"), ("HSET", "unacked", "tag", "{}"),
    ("ZRANGE", "unacked_index", "0", "-1"), ("ZADD", "unacked_index", "1", "tag"),
    ("SMEMBERS", "_kombu.binding.cpu"),
    # another volunteer's namespace
    ("LLEN", "vol:acl-b:cpu"), ("LPUSH", "vol:acl-b:cpu", "{}"),
    ("GET", "vol:acl-b:celery-task-meta-x"), ("SET", "vol:acl-b:idle-accel:fleet:mode", "{}"),
    # the team's results, credit, verdicts, status, fleet mode, jobs, the coordinator's keys
    ("GET", "celery-task-meta-x"), ("SET", "celery-task-meta-x", "{}"),
    ("HINCRBY", keys.credit("acl-a"), "tasks", "100"), ("HGETALL", keys.credit("acl-b")),
    ("HGETALL", keys.verification("x")), ("HSET", keys.verification("x"), "owner:y", "acl-a"),
    ("GET", keys.worker("acl-b@h")), ("SET", keys.worker("acl-a@h"), "{}"),
    ("GET", keys.FLEET_MODE), ("SET", keys.FLEET_MODE, '{"emergency": true}'),
    ("GET", "idle-accel:job:some-job"), ("HGETALL", keys.VOLUNTEERS),
    ("ZRANGE", keys.ASSIGNMENTS, "0", "-1"), ("SET", keys.COORDINATOR_LOCK, "mine"),
    ("GET", "team:secret"),
    # the team's channels and another namespace's
    ("PUBLISH", "/0.celery.pidbox", "{}"),  # no remote control (shutdown...) of the fleet
    ("PUBLISH", "/0.celeryev/x", "{}"),  # no events in the team's name
    ("PUBLISH", "celery-task-meta-x", "{}"), ("PUBLISH", "vol:acl-b:/0.celery.pidbox", "{}"),
    ("SUBSCRIBE", "vol:acl-b:/0.celery.pidbox"), ("SUBSCRIBE", "celery-task-meta-x"),
    ("PSUBSCRIBE", "vol:*"), ("PSUBSCRIBE", "*"),
]


@pytest.mark.parametrize("command", VOLUNTEER_REFUSED, ids=" ".join)
def test_a_volunteer_is_refused_outside_its_namespace(acl, admin, command):
    admin.set("team:secret", "team only")
    with acl.own("acl-a") as volunteer, pytest.raises(redis.exceptions.NoPermissionError):
        volunteer.execute_command(*command)
    assert admin.get("team:secret") == b"team only"
    assert admin.get(keys.COORDINATOR_LOCK) != b"mine"
    assert any(line.startswith("vol-acl-a:") for line in denials(admin))  # ACL LOG sees it


def test_a_volunteer_may_use_its_own_namespace(acl, admin):
    with acl.own("acl-a") as volunteer:
        assert volunteer.set("vol:acl-a:mine", "1")
        assert volunteer.get("vol:acl-a:mine") == b"1"
        assert volunteer.publish("vol:acl-a:/0.celeryev/x", "{}") >= 0
        assert volunteer.delete("vol:acl-a:mine") == 1
    assert denials(admin) == []


COORDINATOR_REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
    ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"), ("SHUTDOWN", "NOSAVE"), ("KEYS", "*"),
    ("ACL", "LIST"), ("ACL", "DELUSER", "team"), ("ACL", "LOG"), ("MONITOR",),
    ("CLIENT", "PAUSE", "1000"),
]


@pytest.mark.parametrize("command", COORDINATOR_REFUSED, ids=" ".join)
def test_the_coordinator_is_refused_admin_commands(acl, admin, command):
    admin.set("team:secret", "kept")
    with acl.client("coordinator") as coordinator, \
            pytest.raises(redis.exceptions.NoPermissionError):
        coordinator.execute_command(*command)
    assert admin.get("team:secret") == b"kept"
    assert acl.coordinator.alive and acl.server.running
    assert any(line.startswith("coordinator:") for line in denials(admin))


TEAM_REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
    ("DEBUG", "SLEEP", "0"), ("KEYS", "*"), ("ACL", "LIST"), ("ACL", "SETUSER", "vol-acl-a", "off"),
    ("MODULE", "LIST"), ("CLIENT", "KILL", "TYPE", "normal"), ("SHUTDOWN", "NOSAVE"),
]


@pytest.mark.parametrize("command", TEAM_REFUSED, ids=" ".join)
def test_the_team_is_refused_admin_commands(acl, admin, command):
    admin.set("team:secret", "kept")
    with acl.client("team") as team, pytest.raises(redis.exceptions.NoPermissionError):
        team.execute_command(*command)
    assert admin.get("team:secret") == b"kept"
    assert acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"] in {
        process.node for process in acl.workers.values()}  # nobody shut down or cut off


def test_no_one_gets_in_without_a_users_password(acl):
    anonymous = redis.Redis(host="127.0.0.1", port=acl.server.port, socket_timeout=5)
    with anonymous, pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    for role in ROLES:
        with acl.client(role) as client:
            assert client.ping()
    with acl.own("acl-a") as volunteer:
        assert volunteer.ping()
    for user, password in (("default", ""), ("default", "x"), ("default", acl.passwords["admin"]),
                           ("coordinator", acl.passwords["team"]),
                           ("team", acl.passwords["coordinator"]),
                           ("volunteer", "anything"), ("vol-acl-b", acl.passwords["team"])):
        wrong = acl.server.client(user=user, password=password)
        with wrong, pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()


@pytest.mark.parametrize(("step", "refusal"), [
    ("as shipped", "should start with user keyword"),
    ("comments removed, no passwords", "password hash must be exactly 64 characters"),
])
def test_the_shipped_file_does_not_start_until_rendered(tmp_path, step, refusal):
    require_redis_7()
    template = TEMPLATE.read_text()
    users = tmp_path / "users.acl"
    users.write_text(template if step == "as shipped" else strip_comments(template))
    server = RedisServer(tmp_path / "redis", acl_file=users, user="admin",
                         password="unused")
    with pytest.raises(IdleAccelError, match=refusal):
        server.start()
    assert not server.running


def test_the_shipped_file_has_no_shared_volunteer_user():
    users = [line.split()[1] for line in strip_comments(TEMPLATE.read_text()).splitlines()
             if line.startswith("user ")]
    assert users == ["default", "admin", "team", "coordinator"]


def test_after_a_redis_restart_the_data_and_the_volunteers_users_are_back(acl):
    """The AOF replays transactions and scripts (as ``default``: the ACL file lets it), so
    nothing is lost. Enrolled users live in Redis's memory, not in the ACL file; the data
    keeps their records, from which the coordinator (ACL USERS, ACL SETUSER) restores them."""
    nodes = {process.node for process in acl.workers.values()}
    volunteer = acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"]
    volunteer = volunteer.split("@", 1)[0]
    with acl.client() as admin:
        # Granted by the coordinator's Lua script (several writes: a transaction in the AOF).
        credit = wait_for(lambda: admin.hgetall(keys.credit(volunteer)), what="credit")
        volunteers = admin.hgetall(keys.VOLUNTEERS)
    # The coordinator is held still across the restart, so the test sees the users gone
    # before it brings them back (it restores them within a sweep of seeing Redis again).
    acl.coordinator.signal(signal.SIGSTOP)
    try:
        acl.server.restart()
        with acl.client() as admin:
            assert admin.hgetall(keys.credit(volunteer)) == credit
            assert admin.hgetall(keys.VOLUNTEERS) == volunteers
            assert "vol-acl-a" not in admin.acl_users()  # lost with the restart
    finally:
        acl.coordinator.signal(signal.SIGCONT)
    with acl.client() as admin:
        wait_for(lambda: {"vol-acl-a", "vol-acl-b"} <= set(admin.acl_users()),
                 timeout=TIMEOUT, what="the volunteers' users restored by the coordinator")
        assert "vol-acl-hog" not in admin.acl_users()  # disabled: not brought back
        assert acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"] in nodes
        # Only the volunteers' workers knocking before their users were back.
        assert all(re.match(r"vol-acl-[ab]: auth '(AUTH|HELLO)' in toplevel", line)
                   for line in denials(admin)), denials(admin)
