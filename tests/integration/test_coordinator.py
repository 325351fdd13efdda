"""Through the trust boundary: volunteers in their own namespaces, a real coordinator between.

Volunteer workers log in as their own Redis users (``vol-NAME``), confined
to ``vol:NAME:*``; the team sends tasks exactly as before; the coordinator
moves them, stores the team's results and runs the continuations.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from celery import Celery, chain, chord

from compute import keys, verify
from compute.errors import InvalidArgument
from worker.local.worker_process import cli_command

from .enrolled import Fleet, credit_of, wait_idle_coordinator
from .waiting import wait_for

TIMEOUT = 60


def test_team_tasks_chains_chords_and_links_run_on_volunteers(app: Celery, fleet: Fleet,
                                                               broker) -> None:
    fleet.coordinator()
    fleet.worker("alice")
    fleet.worker("bob")
    results = [app.signature("compute.diag.noop").delay() for _ in range(20)]
    hosts = [r.get(timeout=TIMEOUT)["hostname"] for r in results]
    assert set(hosts) <= {"alice@h", "bob@h"}
    assert len(set(hosts)) == 2, hosts

    job = chain(app.signature("compute.diag.checksum", ("abc",)),
                app.signature("compute.diag.checksum", ("def",), immutable=True)).apply_async()
    assert job.get(timeout=TIMEOUT)["sha256"] == hashlib.sha256(b"def").hexdigest()
    assert job.parent.get(timeout=TIMEOUT)["sha256"] == hashlib.sha256(b"abc").hexdigest()

    parts = chord([app.signature("compute.diag.checksum", (str(i),)) for i in range(4)],
                  app.signature("compute.diag.checksum", ("body",), immutable=True))
    assert parts.apply_async().get(timeout=TIMEOUT)["sha256"] == \
        hashlib.sha256(b"body").hexdigest()

    linked = app.signature("compute.diag.noop").apply_async(
        link=app.signature("compute.diag.checksum", ("linked",), immutable=True))
    linked.get(timeout=TIMEOUT)
    child = linked.children[0] if linked.children else None
    assert child is not None and child.get(timeout=TIMEOUT)

    bad = app.signature("compute.diag.sleep", ("ten",)).delay()
    with pytest.raises(InvalidArgument, match="seconds"):
        bad.get(timeout=TIMEOUT)

    wait_idle_coordinator(broker)
    total = credit_of(broker, "alice")["tasks"] + credit_of(broker, "bob")["tasks"]
    assert total >= 20 + 2 + 5 + 2
    with broker.client() as client:
        assert client.zcard(keys.ASSIGNMENTS) == 0


def _wait_started(result, timeout: float = TIMEOUT) -> None:
    wait_for(lambda: result.state == "STARTED", timeout, what=f"{result.id} STARTED")


def test_a_volunteer_killed_mid_task_loses_it_and_another_runs_it(app: Celery, fleet: Fleet,
                                                                  broker) -> None:
    fleet.coordinator()
    alice = fleet.worker("alice")
    result = app.signature("compute.diag.sleep", (3,)).delay()
    _wait_started(result)
    alice.kill()
    killed = time.monotonic()
    fleet.worker("bob")
    assert result.get(timeout=TIMEOUT)["hostname"] == "bob@h"
    print(f"killed volunteer's task done elsewhere {time.monotonic() - killed:.1f} s later")
    assert "reissued" in fleet.coordinators[0].log_text()


def test_a_frozen_volunteer_loses_its_task_and_its_late_result_is_discarded(
        app: Celery, fleet: Fleet, broker) -> None:
    fleet.coordinator("--lease-timeout", "4")
    alice = fleet.worker("alice")
    result = app.signature("compute.diag.sleep", (6,)).delay()
    _wait_started(result)
    os.killpg(alice.pid, signal.SIGSTOP)  # a laptop lid closing: the whole machine stops
    try:
        fleet.worker("bob")
        assert result.get(timeout=TIMEOUT)["hostname"] == "bob@h"
    finally:
        os.killpg(alice.pid, signal.SIGCONT)
    # Alice thaws, finishes her copy and stores it in her namespace: never the team's.
    wait_for(lambda: f"sleep[{result.id}] succeeded" in alice.log_text(), 30,
             what="alice's late copy finished")
    time.sleep(1.0)
    assert app.AsyncResult(result.id).get(timeout=5)["hostname"] == "bob@h"
    wait_idle_coordinator(broker)
    assert credit_of(broker, "alice")["tasks"] == 0
    assert credit_of(broker, "bob")["tasks"] == 1


def test_work_waiting_for_a_volunteer_whose_owner_returns_goes_to_another(
        app: Celery, fleet: Fleet, broker) -> None:
    fleet.coordinator("--ahead", "3")
    fleet.worker("alice")
    first = app.signature("compute.diag.sleep", (4,)).delay()
    _wait_started(first)
    waiting = [app.signature("compute.diag.noop").delay() for _ in range(3)]
    wait_for(lambda: _held_by(broker, "alice") == 4, 10, what="3 tasks queued at alice")
    fleet.volunteers["alice"].owner.busy()
    fleet.worker("bob")
    assert {r.get(timeout=TIMEOUT)["hostname"] for r in waiting} == {"bob@h"}
    fleet.volunteers["alice"].owner.idle()
    assert first.get(timeout=TIMEOUT)["hostname"] == "alice@h"  # suspended, then continued


def _held_by(broker, name: str) -> int:
    with broker.client() as client:
        return int(client.scard(keys.assigned(name)))


def test_a_standby_coordinator_takes_over_and_nothing_is_lost(app: Celery, fleet: Fleet,
                                                               broker) -> None:
    first = fleet.coordinator()
    second = fleet.coordinator(wait=False)
    fleet.worker("alice", "--concurrency", "2")
    fleet.worker("bob", "--concurrency", "2")
    results = [app.signature("compute.diag.sleep", (0.05,)).delay() for _ in range(150)]
    wait_for(lambda: sum(r.ready() for r in results) >= 30, TIMEOUT, what="30 done")
    first.kill()  # kill -9, mid-flight: its lock expires, the standby takes over
    done = [r.get(timeout=TIMEOUT) for r in results]
    assert len(done) == 150 and all(d["hostname"] in ("alice@h", "bob@h") for d in done)
    assert "coordinator active" in second.log_text()
    wait_idle_coordinator(broker)
    total = credit_of(broker, "alice")["tasks"] + credit_of(broker, "bob")["tasks"]
    assert total == 150


def test_verified_tasks_run_on_distinct_volunteers_and_credit_both(app: Celery, fleet: Fleet,
                                                                  broker) -> None:
    fleet.coordinator()
    fleet.worker("alice", "--concurrency", "2")
    fleet.worker("bob", "--concurrency", "2")
    results = [app.signature("compute.diag.checksum", (f"v{i}",)).apply_async(verify=2)
               for i in range(6)]
    for i, result in enumerate(results):
        assert result.get(timeout=TIMEOUT)["sha256"] == hashlib.sha256(f"v{i}".encode()
                                                                      ).hexdigest()
    with broker.client() as client:
        for result in results:
            report = verify.report(client, result.id)
            assert sorted(r["host"] for r in report["replicas"]) == ["alice", "bob"]
            assert report["verdict"]["agreed"]
    linked = app.signature("compute.diag.checksum", ("x",)).apply_async(
        verify=2, link=app.signature("compute.diag.checksum", ("after",), immutable=True))
    linked.get(timeout=TIMEOUT)

    def children() -> list:  # as stored (the client caches the first, childless result)
        with broker.client() as client:
            return json.loads(client.get(f"celery-task-meta-{linked.id}"))["children"]

    wait_for(children, 10, what="the link, sent from the verdict")
    found = children()
    assert len(found) == 1  # sent once, not once per replica
    child = app.AsyncResult(found[0][0][0])  # Celery's ((id, parent), children) tuple
    assert child.get(timeout=TIMEOUT)["sha256"] == hashlib.sha256(b"after").hexdigest()
    wait_idle_coordinator(broker)
    alice, bob = credit_of(broker, "alice")["tasks"], credit_of(broker, "bob")["tasks"]
    assert min(alice, bob) >= 7 and alice + bob == 7 + 7 + 1  # 7 verified each, and the link


def test_region_pinned_work_goes_only_to_volunteers_enrolled_in_that_region(
        app: Celery, fleet: Fleet, broker) -> None:
    fleet.coordinator()
    fleet.enroll("eu", region="eu-west")
    fleet.worker("eu", "--region", "eu-west")
    fleet.worker("liar", "--region", "eu-west")  # claims the region, enrolled without one
    pinned = [app.signature("compute.diag.noop").apply_async(queue="cpu@eu-west")
              for _ in range(20)]
    assert {r.get(timeout=TIMEOUT)["hostname"] for r in pinned} == {"eu@h"}
    anywhere = [app.signature("compute.diag.noop").delay() for _ in range(20)]
    assert {r.get(timeout=TIMEOUT)["hostname"] for r in anywhere} <= {"eu@h", "liar@h"}


def test_emergency_mode_reaches_volunteers_through_their_namespaces(app: Celery, fleet: Fleet,
                                                                    broker) -> None:
    fleet.coordinator()
    fleet.worker("alice", "--status-interval", "0.5")
    env = {**os.environ, "CELERY_BROKER_URL": broker.url(0)}
    subprocess.run([*cli_command(), "fleet", "emergency", "on"], env=env, check=True,
                   capture_output=True, timeout=60)
    wait_for(lambda: fleet_doc(broker, "alice@h").get("consuming") == ["emergency"], 20,
             what="alice consuming emergency only")
    normal = app.signature("compute.diag.noop").delay()
    urgent = app.signature("compute.diag.noop").apply_async(queue="emergency")
    assert urgent.get(timeout=TIMEOUT)["hostname"] == "alice@h"
    time.sleep(1.0)
    assert normal.state == "PENDING"
    subprocess.run([*cli_command(), "fleet", "emergency", "off"], env=env, check=True,
                   capture_output=True, timeout=60)
    assert normal.get(timeout=TIMEOUT)["hostname"] == "alice@h"


def fleet_doc(broker, node: str) -> dict:
    from worker.status import read_fleet

    with broker.client() as client:
        return next((d for d in read_fleet(client) if d["node"] == node), {})


def test_remote_control_reaches_volunteers_but_shutdown_does_not(app: Celery, fleet: Fleet,
                                                                 broker) -> None:
    fleet.coordinator()
    alice = fleet.worker("alice")
    env = {**os.environ, "CELERY_BROKER_URL": broker.url(0)}
    done = subprocess.run([*cli_command(), "ping", "--name", "alice@h"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alice@h: pong" in done.stdout, done.stdout + done.stderr
    queues = app.control.inspect(timeout=2.0).active_queues() or {}
    assert "cpu" in [q["name"] for q in queues.get("alice@h", [])]
    app.control.broadcast("shutdown")
    time.sleep(2.0)
    assert alice.alive
    assert app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT)["hostname"] == "alice@h"


def test_a_long_step_keeps_the_lock(app: Celery, fleet: Fleet, broker) -> None:
    """Placing a large backlog takes longer than a short lock lasts: the lock is renewed
    inside the step, so the coordinator neither loses it nor has to take over again."""
    coordinator = fleet.coordinator("--lock-ttl", "1")
    names = [f"big{i}" for i in range(60)]
    for name in names:
        fleet.enroll(name)
    with app.producer_or_acquire() as producer:  # a backlog first, nobody idle yet
        for _ in range(len(names) * 64):
            app.signature("compute.diag.noop").apply_async(producer=producer)
    with broker.client() as client:
        pipe = client.pipeline()
        for name in names:  # then 60 volunteers of 64 processes idle at once: one long step
            pipe.set(f"vol:{name}:{keys.worker(name + '@sim')}", json.dumps(
                {"node": f"{name}@sim", "at": time.time(), "state": "idle",
                 "queues": ["cpu"], "consuming": ["cpu"], "concurrency": 64}))
        pipe.execute()
        wait_for(lambda: client.zcard(keys.ASSIGNMENTS) >= len(names) * 64, 90,
                 what="the backlog placed")
    log = coordinator.log_text()
    assert "lock was lost" not in log and "step failed" not in log, log[-2000:]
    assert log.count("coordinator active") == 1


def test_a_message_left_in_an_inbox_between_steps_goes_back_without_a_restart(
        app: Celery, fleet: Fleet, broker) -> None:
    """A take whose place never happened (Redis failed between the two, or a failover's
    replica has the take and not the place) is put back by the next sweep, not at the next
    coordinator start."""
    from compute.coordinator.ledger import inbox

    coordinator = fleet.coordinator()
    fleet.worker("alice")
    app.signature("compute.diag.noop").delay().get(timeout=TIMEOUT)  # it has taken from cpu
    os.kill(coordinator.pid, signal.SIGSTOP)
    try:
        stray = app.signature("compute.diag.noop").delay()
        with broker.client() as client:  # taken, as the coordinator's step would, and left
            assert client.lmove("cpu", inbox("cpu"), "RIGHT", "LEFT") is not None
    finally:
        os.kill(coordinator.pid, signal.SIGCONT)
    assert stray.get(timeout=TIMEOUT)["hostname"] == "alice@h"
    assert coordinator.alive
    assert "taken but never placed" in coordinator.log_text()
