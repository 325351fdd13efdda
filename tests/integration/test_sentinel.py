"""Redis Sentinel: the fleet on a ``sentinel://`` URL carries on when its primary dies.

A primary, a replica and three sentinels on loopback; two dedicated workers,
the team's client and the project's own Redis clients (leases, status, the
``fleet`` CLI) on one Sentinel URL. Tasks are sent and replicated, the primary
is killed with SIGKILL while the workers run them, the sentinels promote the
replica, and every task completes; a task whose acknowledgement the replica
had not received when the primary died runs again (at least once, as after any
broker loss), and the tests count them.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import redis

from compute import redis_clients
from compute.app import create_app
from compute.coordinator import registry
from compute.replication import NotReplicated
from compute.settings import Settings
from worker.local.coordinator_process import CoordinatorProcess
from worker.local.redis_server import TlsFiles
from worker.local.sentinel_group import MASTER, SentinelGroup
from worker.local.worker_process import WorkerProcess, cli_command

from .enrolled import TEST_COORDINATOR_ARGS
from .gating import Owner, received
from .test_tls import make_ca, make_server_cert, require_tls

TASKS = 120
DURING = 20  # tasks sent while the sentinels fail over


@pytest.fixture
def group(tmp_path):
    started = SentinelGroup(tmp_path / "sentinel").start()
    try:
        yield started
    finally:
        started.stop()


def test_a_killed_primary_fails_over_and_every_task_completes(group, tmp_path):
    url = group.url()
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
           "IDLE_ACCEL_SENTINEL_MASTER": MASTER}
    app = create_app(Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER))
    workers = []
    try:
        for name in ("sen-a", "sen-b"):
            worker = WorkerProcess(name, env=env, log_path=tmp_path / f"{name}.log",
                                   args=["--mode", "dedicated", "--concurrency", "2"])
            workers.append(worker)
            worker.start()
        for worker in workers:
            worker.wait_ready(app)

        results = [app.signature("compute.diag.burn", (0.15,)).delay() for _ in range(TASKS)]
        group.wait_replicated()  # every task is on the replica before the primary dies
        while sum(result.ready() for result in results) < TASKS // 4:
            time.sleep(0.05)
        # A submitter keeps sending while the sentinels fail over: its sends ride through.
        go, sent, refused = threading.Event(), [], []

        def submit() -> None:
            go.wait(60)
            for _ in range(DURING):
                try:
                    sent.append(app.signature("compute.diag.noop").delay())
                except Exception as exc:  # counted and shown
                    refused.append(repr(exc))
                time.sleep(0.15)
        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        failover = group.kill_primary(on_killed=go.set)
        killed_at = time.monotonic()
        submitter.join(120)

        done = [result.get(timeout=180) for result in results + sent]
        recovered = time.monotonic() - killed_at
        fleet = subprocess.run([*cli_command(), "fleet", "status", "--json"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, **env})
        alive = [worker.alive for worker in workers]
    finally:
        for worker in workers:
            worker.stop(timeout=20)
        app.close()

    twice = sum(received(workers, result.id) > 1 for result in results)
    print(f"\nsentinel: failover {failover:.1f} s after the kill; all {TASKS} tasks done "
          f"{recovered:.1f} s after it; {twice} ran twice; {len(sent)} of {DURING} sent "
          f"during the failover went through and ran")
    assert refused == [] and len(sent) == DURING
    assert len(done) == TASKS + DURING and all(isinstance(value, dict) for value in done)
    assert group.primary_port() == group.replica.port
    assert fleet.returncode == 0, fleet.stderr
    nodes = {worker["node"] for worker in json.loads(fleet.stdout)["workers"]}
    assert {worker.node for worker in workers} <= nodes  # the project's own client, promoted
    assert alive == [True, True]  # both rode through the failover


def _coordinated_volunteers(url: str, admin, tmp_path, names: tuple[str, ...],
                            started: list) -> list[WorkerProcess]:
    """A coordinator on the Sentinel URL, and ``names`` enrolled there, each a worker of 2
    processes whose owner is away; all in ``started``. The workers, once taking work."""
    team = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
            "IDLE_ACCEL_SENTINEL_MASTER": MASTER}
    coordinator = CoordinatorProcess(env=team, args=list(TEST_COORDINATOR_ARGS),
                                     log_path=tmp_path / "coordinator.log")
    started.append(coordinator)
    coordinator.start()
    coordinator.wait_active(admin)
    volunteers = []
    for name in names:
        enrolled = registry.enroll(admin, url, name)
        owner = Owner.away(tmp_path / f"{name}.owner")
        worker = WorkerProcess(f"{name}@h", log_path=tmp_path / f"{name}.log",
                               env={"CELERY_BROKER_URL": enrolled.broker_url,
                                    "IDLE_ACCEL_SENTINEL_MASTER": MASTER},
                               args=["--sensor", owner.flag, "--sensor-max-age", "0",
                                     "--idle-after", "0", "--concurrency", "2"])
        started.append(worker)
        volunteers.append(worker)
        worker.start()
    for worker in volunteers:
        worker.wait_reported(admin, worker.node, consuming=True)
    return volunteers


def test_enrolled_volunteers_and_the_coordinator_ride_through_a_failover(group, tmp_path):
    """Redis does not replicate ACL users: the coordinator re-creates the volunteers' users on
    the promoted replica from their records (which it does replicate), and they log in again."""
    url = group.url()
    app = create_app(Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER))
    admin = redis_clients.connect(url, {"master_name": MASTER})
    started = []
    try:
        volunteers = _coordinated_volunteers(url, admin, tmp_path, ("alice", "bob"), started)

        results = [app.signature("compute.diag.burn", (0.15,)).delay() for _ in range(60)]
        group.wait_replicated()
        while sum(result.ready() for result in results) < 15:
            time.sleep(0.05)
        group.wait_replicated()  # the records and the work handed out so far
        failover = group.kill_primary()
        killed_at = time.monotonic()

        done = [result.get(timeout=240) for result in results]
        recovered = time.monotonic() - killed_at
        hosts = {value["hostname"] for value in done}
        alive = [process.alive for process in started]
    finally:
        for process in reversed(started):
            process.stop(timeout=20)
        admin.close()
        app.close()

    twice = sum(received(volunteers, result.id) > 1 for result in results)
    print(f"\nsentinel, through the coordinator: failover {failover:.1f} s; all 60 tasks done "
          f"{recovered:.1f} s after the kill; {twice} ran twice")
    assert hosts <= {"alice@h", "bob@h"} and len(done) == 60
    assert alive == [True, True, True]
    assert "restored" in (tmp_path / "coordinator.log").read_text()  # the users, re-created


def test_writes_the_replica_never_got_are_caught_by_the_coordinator(group, tmp_path):
    """What asynchronous replication loses, made certain: the replica receives nothing for
    the last 1.5 s before the primary dies, while the coordinator places work and the
    volunteers run it and store results. The promoted replica has none of that: the
    assignments, the volunteers' copies, their results and acknowledgements, the team's
    results. Every task still completes; those whose results were lost run again."""
    url = group.url()
    app = create_app(Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER))
    admin = redis_clients.connect(url, {"master_name": MASTER})
    started = []
    try:
        volunteers = _coordinated_volunteers(url, admin, tmp_path, ("carol", "dave"), started)

        results = [app.signature("compute.diag.burn", (0.1,)).delay() for _ in range(60)]
        while sum(result.ready() for result in results) < 10:
            time.sleep(0.05)
        group.wait_replicated()  # every task sent, and the work so far, is on the replica
        held = {result.id for result in results if result.ready()}
        group.hold_replica()
        time.sleep(1.5)  # the fleet works on; none of it reaches the replica
        lost = {result.id for result in results if result.ready()} - held
        group.kill_primary()
        killed_at = time.monotonic()
        done = [result.get(timeout=240) for result in results]
        recovered = time.monotonic() - killed_at
        alive = [process.alive for process in started]
    finally:
        for process in reversed(started):
            process.stop(timeout=20)
        admin.close()
        app.close()

    twice = {result.id for result in results if received(volunteers, result.id) > 1}
    print(f"\nsentinel, the replica held for 1.5 s: {len(lost)} results stored in that time "
          f"were lost with the primary ({len(lost & twice)} of those ran again; the others' "
          f"volunteer results had reached the replica, and the coordinator stored them "
          f"again); all 60 tasks done {recovered:.1f} s after the kill; {len(twice)} ran twice")
    assert len(done) == 60 and {value["hostname"] for value in done} <= {"carol@h", "dave@h"}
    assert lost, "no result was stored while the replica was held: the test proved nothing"
    assert alive == [True, True, True]


def test_with_send_replicas_a_send_returns_only_once_a_replica_holds_the_task(group):
    """IDLE_ACCEL_SEND_REPLICAS=1: the one loss the coordinator cannot catch (a task sent
    but never replicated) is closed; with the replica held, the send says so."""
    url = group.url()
    app = create_app(Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER,
                                   send_replicas=1))
    try:
        app.signature("compute.diag.noop").delay()
        with group.replica.client() as replica:  # no WAIT of the test's own: the send's
            assert replica.llen("cpu") == 1
        group.hold_replica(padding_mb=0)
        started = time.monotonic()
        with pytest.raises(NotReplicated, match=r"compute.diag.noop \[.*0 of 1 replica"):
            app.signature("compute.diag.noop").delay()
        assert time.monotonic() - started >= 4.5  # it waited for the replica, then said so
    finally:
        group.release_replica()
        app.close()


DANGEROUS = [("SENTINEL", "FAILOVER", MASTER), ("SENTINEL", "REMOVE", MASTER),
             ("SENTINEL", "SET", MASTER, "quorum", "1"),
             ("SENTINEL", "MONITOR", "evil", "127.0.0.1", "6379", "1"),
             ("SENTINEL", "RESET", "*"), ("SENTINEL", "CONFIG", "SET", "resolve-hostnames",
                                          "yes"),
             ("SENTINEL", "FLUSHCONFIG"), ("SENTINEL", "SIMULATE-FAILURE", "crash-after-election"),
             ("SENTINEL", "IS-MASTER-DOWN-BY-ADDR", "127.0.0.1", "1", "0", "*"),
             ("ACL", "SETUSER", "default", "+@all"), ("ACL", "LIST"), ("SHUTDOWN",),
             ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "LIST"), ("INFO",),
             ("PUBLISH", "+switch-master", "x")]


def test_a_volunteer_reaching_a_sentinel_can_find_the_primary_and_nothing_else(group):
    """Volunteers on a Sentinel URL talk to the sentinels: with the shipped users
    (deploy/redis/sentinel-users.conf) anyone without a password may look the primary up,
    and every command that could move, remove or replace it is refused."""
    port = group.sentinel_ports[0]
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as stranger:
        assert stranger.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1] \
            == str(group.primary.port).encode()
        refused = []
        for command in DANGEROUS:
            with pytest.raises(redis.ResponseError) as caught:
                stranger.execute_command(*command)
            refused.append(isinstance(caught.value, redis.exceptions.NoPermissionError))
    assert all(refused), [c for c, no in zip(DANGEROUS, refused, strict=True) if not no]
    # Discovery as every client library does it (SENTINEL MASTERS, then the primary):
    client = redis_clients.connect(group.url(), {"master_name": MASTER})
    try:
        assert client.ping()
    finally:
        client.close()
    # The admin may; the group is unchanged by all of the above.
    with redis.Redis(host="127.0.0.1", port=port, username="admin",
                     password=group.password, socket_timeout=5) as admin:
        assert admin.execute_command("SENTINEL", "CKQUORUM", MASTER).startswith(b"OK")
    assert group.primary_port() == group.primary.port


def test_sentinel_over_tls_fails_over_and_refuses_an_untrusted_ca(tmp_path):
    """Sentinels, primary and replica all TLS-only (replication and the sentinels' own links
    too); every part verifies them against the CA in IDLE_ACCEL_SENTINEL_TLS_CA."""
    ca, ca_cert, ca_key = make_ca(tmp_path, "sentinel-ca")
    rogue, _, _ = make_ca(tmp_path, "rogue-ca")
    cert, key = make_server_cert(tmp_path, ca_cert, ca_key)
    tls = TlsFiles(cert=cert, key=key, ca=ca)
    group = SentinelGroup(tmp_path / "sentinel", tls=tls)
    require_tls(group.primary.binary)
    group.start()
    url = group.url()
    env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
           "IDLE_ACCEL_SENTINEL_MASTER": MASTER, "IDLE_ACCEL_SENTINEL_TLS_CA": str(ca)}
    settings = Settings.load(broker_url=url, result_backend=url, sentinel_master=MASTER,
                             sentinel_tls_ca=str(ca))
    app = create_app(settings)
    worker = WorkerProcess("tls-a", env=env, log_path=tmp_path / "tls-a.log",
                           args=["--mode", "dedicated", "--concurrency", "2"])
    try:
        worker.start()
        worker.wait_ready(app, timeout=60)
        results = [app.signature("compute.diag.burn", (0.1,)).delay() for _ in range(40)]
        while sum(result.ready() for result in results) < 10:
            time.sleep(0.05)
        group.wait_replicated()
        failover = group.kill_primary()
        done = [result.get(timeout=180) for result in results]
        fleet = subprocess.run([*cli_command(), "fleet", "status", "--json"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, **env})
        alive = worker.alive
        # Every connection is TLS, checked against the CA: another CA, or none, gets nothing.
        rogue_settings = Settings.load(broker_url=url, sentinel_master=MASTER,
                                       sentinel_tls_ca=str(rogue))
        for options in (rogue_settings.redis_options(url), {"master_name": MASTER}):
            client = redis_clients.connect(url, options, timeout=3)
            with pytest.raises(redis.exceptions.ConnectionError):
                client.ping()
            client.close()
    finally:
        worker.stop(timeout=20)
        app.close()
        group.stop()
    print(f"\nsentinel over TLS: failover {failover:.1f} s; all 40 tasks done")
    assert len(done) == 40 and alive
    assert fleet.returncode == 0, fleet.stderr
    assert worker.node in {w["node"] for w in json.loads(fleet.stdout)["workers"]}
