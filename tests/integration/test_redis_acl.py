"""Least-privilege Redis users (deploy/redis/users.acl) against a real redis-server and workers.

The shipped ACL file is rendered with generated passwords into a private
``redis-server``; volunteer workers log in as ``volunteer``, the team's
client, CLI and Flower as ``team``. Every path a worker takes (tasks,
checkpoints and a resume, verified results, a chord job, fleet commands,
remote control, a restart) must leave ``ACL LOG`` empty, and what each role
must not do is refused with NOPERM.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
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
from compute.errors import IdleAccelError
from compute.settings import Settings
from worker.local.flower_process import FlowerProcess
from worker.local.redis_server import RedisServer, find_binary, version
from worker.local.worker_process import WorkerProcess, cli_command

from .conftest import STARTED_WORKERS
from .gating import Owner, fleet
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "redis" / "users.acl"
ROLES = ("admin", "team", "volunteer")
TIMEOUT = 45


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
    """A redis-server with the shipped users, two volunteer workers and a team client."""

    server: RedisServer
    passwords: dict[str, str]
    directory: Path
    app: Celery | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    owners: dict[str, Owner] = field(default_factory=dict)

    def url(self, role: str) -> str:
        return self.server.url(0, user=role, password=self.passwords[role])

    def env(self, role: str) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.url(role), "CELERY_RESULT_BACKEND": self.url(role)}

    def client(self, role: str = "admin") -> redis.Redis:
        return self.server.client(user=role, password=self.passwords[role])

    def volunteer(self, name: str, host: str, *args: str) -> WorkerProcess:
        """Start ``idle-accel worker`` as the volunteer user, its owner away."""
        owner = self.owners[name] = Owner.away(self.directory / f"{name}.owner")
        process = WorkerProcess(
            name, env=self.env("volunteer"), log_path=self.directory / f"{name}.log",
            args=("--concurrency", "1", "--host-id", host, "--sensor", owner.flag,
                  "--sensor-max-age", "0", "--idle-after", "0", *args))
        self.workers[name] = process
        process.start()
        process.wait_ready(self.app)
        return process

    def cli(self, *args: str, role: str = "team", timeout: float = 90
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli_command(), *args], env={**os.environ, **self.env(role)},
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclFleet]:
    require_redis_7()
    directory = tmp_path_factory.mktemp("acl")
    passwords = {role: f"{role}-{os.urandom(12).hex()}" for role in ROLES}
    users = directory / "users.acl"
    users.write_text(render(TEMPLATE.read_text(), passwords))
    users.chmod(0o600)
    # DEBUG and MODULE are open to local connections, so that only the ACL refuses them.
    server = RedisServer(directory / "redis", acl_file=users, user="admin",
                         password=passwords["admin"],
                         extra_config=["enable-debug-command local", "enable-module-command local"])
    server.start()
    setup = AclFleet(server, passwords, directory)
    setup.app = create_app(Settings.load(broker_url=setup.url("team")))
    try:
        setup.volunteer("acl-a", "machine-a", "--preempt-after", "1")
        setup.volunteer("acl-b", "machine-b")
        yield setup
    finally:
        for process in setup.workers.values():
            process.stop(timeout=20)
        setup.app.close()
        server.stop()


@pytest.fixture
def admin(acl: AclFleet, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The admin's client, with ``ACL LOG`` emptied; worker logs go to a failure's report."""
    request.node.stash[STARTED_WORKERS] = list(acl.workers.values())
    with acl.client("admin") as client:
        client.acl_log_reset()
        yield client


def consuming(acl: AclFleet, name: str) -> list[str]:
    return fleet(acl.server).get(acl.workers[name].node, {}).get("consuming", [])


def test_tasks_checkpoints_and_a_resume_leave_no_denial(acl, admin):
    first, second = acl.workers["acl-a"], acl.workers["acl-b"]
    assert acl.app.send_task("compute.diag.noop").get(timeout=TIMEOUT)["hostname"] in {
        first.node, second.node}

    # A burn on acl-a checkpoints; its owner returns and it is preempted;
    # acl-b resumes it from the checkpoint.
    acl.owners["acl-b"].busy()
    wait_for(lambda: consuming(acl, "acl-b") == [], what="acl-b stopped consuming")
    try:
        burn = acl.app.send_task("compute.diag.burn", [3.0])
        wait_for(lambda: admin.exists(keys.checkpoint(burn.id)), timeout=TIMEOUT,
                 what="checkpoint written by the volunteer")
        acl.owners["acl-a"].busy()
        acl.owners["acl-b"].idle()
        done = burn.get(timeout=TIMEOUT)
    finally:
        acl.owners["acl-a"].idle()
        acl.owners["acl-b"].idle()

    assert done["hostname"] == second.node
    assert done["resumed_from"] > 0
    credit = wait_for(lambda: admin.hgetall(keys.credit(second.node)), what="credit")
    assert int(credit[b"tasks"]) >= 1
    wait_for(lambda: consuming(acl, "acl-a"), what="acl-a consuming again")
    assert denials(admin) == []


def test_a_verified_task_runs_on_both_volunteers_with_no_denial(acl, admin):
    result = acl.app.signature("compute.diag.checksum", ("acl", 100)).apply_async(verify=2)

    digest = hashlib.sha256(b"acl").digest()
    for _ in range(99):
        digest = hashlib.sha256(digest).digest()
    assert result.get(timeout=TIMEOUT) == {"sha256": digest.hex(), "rounds": 100}
    report = verify.report(admin, result.id)
    assert sorted(r["host"] for r in report["replicas"]) == ["machine-a", "machine-b"]
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


def test_fleet_commands_and_remote_control_as_team_with_no_denial(acl, admin):
    nodes = {process.node for process in acl.workers.values()}

    status = acl.cli("fleet", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert nodes <= {w["node"] for w in json.loads(status.stdout)["workers"]}

    on = acl.cli("fleet", "emergency", "on")
    try:
        assert on.returncode == 0 and "2 workers switched now" in on.stdout, on.stderr
        wait_for(lambda: all(consuming(acl, n) == ["emergency"] for n in acl.workers),
                 what="the fleet on the emergency queue")
        urgent = acl.app.send_task("compute.diag.noop", queue="emergency")
        assert urgent.get(timeout=TIMEOUT)["hostname"] in nodes
    finally:
        off = acl.cli("fleet", "emergency", "off")
    assert off.returncode == 0, off.stderr
    wait_for(lambda: all("cpu" in consuming(acl, n) for n in acl.workers), what="back to cpu")

    credits = acl.cli("fleet", "credits", "--json")
    assert credits.returncode == 0, credits.stderr
    assert json.loads(credits.stdout)
    ping = subprocess.run([sys.executable, "-m", "celery", "-A", "compute.app", "inspect",
                           "ping", "--timeout", "5"], env={**os.environ, **acl.env("team")},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ping.returncode == 0 and all(f"{n}: OK" in ping.stdout for n in nodes), ping.stdout
    assert denials(admin) == []


def test_flower_as_team_sees_the_volunteers_with_no_denial(acl, admin):
    flower = FlowerProcess(env=acl.env("team"), log_path=acl.directory / "flower.log")
    flower.start()
    try:
        flower.wait_ready()
        nodes = {process.node for process in acl.workers.values()}

        def listed() -> set[str]:
            status, body = flower.get("/api/workers?refresh=1", timeout=20)
            return set(json.loads(body)) if status == 200 else set()

        wait_for(lambda: nodes <= listed(), timeout=TIMEOUT, every=1, what="workers in Flower")
        status, body = flower.get("/api/queues/length", timeout=20)
    finally:
        flower.stop()
    assert status == 200 and "cpu" in {q["name"] for q in json.loads(body)["active_queues"]}
    assert denials(admin) == []


def test_a_restarted_volunteer_serves_its_region_with_no_denial(acl, admin):
    pinned = acl.app.signature("compute.diag.noop").set(queue="cpu@acl-region")
    worker = acl.volunteer("acl-c", "machine-c", "--region", "acl-region")
    assert pinned.delay().get(timeout=TIMEOUT)["hostname"] == worker.node

    assert worker.stop(timeout=20) == 0
    worker = acl.volunteer("acl-c", "machine-c", "--region", "acl-region")
    try:
        # Held across a lease period (5 s): the renewal (ZADD XX unacked_index) is allowed.
        slept = acl.app.signature("compute.diag.sleep", (5.5,)).set(queue="cpu@acl-region")
        assert slept.delay().get(timeout=TIMEOUT)["hostname"] == worker.node
        stats = acl.app.control.inspect(destination=[worker.node], timeout=5).stats()
        assert stats[worker.node]["leases"]["renewed"] >= 1
        assert stats[worker.node]["leases"]["lost"] == []
    finally:
        assert worker.stop(timeout=20) == 0
        del acl.workers["acl-c"]
    assert denials(admin) == []


VOLUNTEER_REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
    ("DEBUG", "SLEEP", "0"), ("KEYS", "*"), ("SCAN", "0"), ("ACL", "LIST"),
    ("MODULE", "LIST"), ("CLIENT", "LIST"), ("MONITOR",), ("SHUTDOWN", "NOSAVE"),
    ("GET", "team:secret"), ("GET", "idle-accel:job:some-job"),
    ("GET", "idle-accel:worker:someone@else"),  # workers write their own status, read none
    ("SET", keys.FLEET_MODE, '{"emergency": true}'),  # only the team switches the fleet
    ("PUBLISH", "/0.celery.pidbox", "{}"),  # no remote control (shutdown...) of the fleet
    ("SUBSCRIBE", "celery-task-meta-x"),
]


@pytest.mark.parametrize("command", VOLUNTEER_REFUSED, ids=" ".join)
def test_the_volunteer_is_refused(acl, admin, command):
    admin.set("team:secret", "team only")
    with acl.client("volunteer") as volunteer, pytest.raises(redis.exceptions.NoPermissionError):
        volunteer.execute_command(*command)
    assert admin.get("team:secret") == b"team only"
    assert any(line.startswith("volunteer:") for line in denials(admin))  # ACL LOG sees it


TEAM_REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
    ("DEBUG", "SLEEP", "0"), ("KEYS", "*"), ("ACL", "LIST"), ("MODULE", "LIST"),
    ("CLIENT", "KILL", "TYPE", "normal"), ("SHUTDOWN", "NOSAVE"),
]


@pytest.mark.parametrize("command", TEAM_REFUSED, ids=" ".join)
def test_the_team_is_refused_admin_commands(acl, admin, command):
    admin.set("team:secret", "kept")
    with acl.client("team") as team, pytest.raises(redis.exceptions.NoPermissionError):
        team.execute_command(*command)
    assert admin.get("team:secret") == b"kept"
    nodes = [process.node for process in acl.workers.values()]
    replies = acl.app.control.ping(destination=nodes, timeout=5)
    assert {node for reply in replies for node in reply} == set(nodes)  # nobody shut down


def test_no_one_gets_in_without_a_users_password(acl):
    anonymous = redis.Redis(host="127.0.0.1", port=acl.server.port, socket_timeout=5)
    with anonymous, pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    with acl.client("volunteer") as volunteer:
        assert volunteer.ping()
    wrong = acl.server.client(user="volunteer", password=acl.passwords["team"])
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
                         password="unused")  # noqa: S106
    with pytest.raises(IdleAccelError, match=refusal):
        server.start()
    assert not server.running
