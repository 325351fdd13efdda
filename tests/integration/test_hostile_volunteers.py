"""Hostile volunteers: strangers with their own broker URL attack while honest volunteers work.

Honest volunteers run real ``idle-accel worker`` processes (``Fleet``);
each hostile one (``hostile.py``) is plain redis-py with nothing but the
broker URL its enrollment gave it. Every attack asserts what Redis answers
(NOPERM for anything outside ``vol:NAME:*``) and that the fleet's outcome is
unharmed: every team task completes with its true result, on an honest
volunteer, with credit to that volunteer only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from compute import keys, verify
from compute.coordinator import registry
from worker import credit
from worker.local.worker_process import cli_command

from .enrolled import Fleet, credit_of, wait_idle_coordinator
from .hostile import (
    FORGED,
    TOO_DEEP,
    EventTap,
    Hostile,
    PidboxForger,
    envelope,
    raw_envelope,
    task_event,
    task_meta,
)
from .waiting import wait_for

TIMEOUT = 60
HONEST = ("alice", "bob")


@pytest.fixture
def hostiles(fleet: Fleet) -> Iterator[dict[str, Hostile]]:
    """Hostile volunteers by name (enrolled on first use); their threads stop after the test."""

    class Enlisted(dict):
        def __missing__(self, name: str) -> Hostile:
            volunteer = fleet.volunteers.get(name) or fleet.enroll(name)
            self[name] = Hostile(name, volunteer.url)
            return self[name]

    found = Enlisted()
    yield found
    for hostile in found.values():
        hostile.stop()


@pytest.fixture
def admin(broker) -> Iterator[redis.Redis]:
    with broker.client() as client:
        yield client


def idle_accel(broker, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the team's CLI (the team's URL: the test Redis's admin user)."""
    env = {**os.environ, "CELERY_BROKER_URL": broker.url(0),
           "CELERY_RESULT_BACKEND": broker.url(0), "COLUMNS": "250"}  # no cell wraps
    return subprocess.run([*cli_command(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def honest_credit(broker) -> int:
    return sum(int(credit_of(broker, name)["tasks"]) for name in HONEST)


def acl_denials(admin: redis.Redis) -> list[dict]:
    return [{"user": str(entry.get("username")), "reason": str(entry.get("reason")),
             "object": str(entry.get("object"))} for entry in admin.acl_log(count=1000)]


# -- 1-8, 12: one volunteer attacks everything around it while two honest ones work -----------


def test_a_hostile_volunteer_reaches_nothing_outside_its_namespace_and_harms_no_task(
        app: Celery, fleet: Fleet, broker, admin, hostiles) -> None:
    """Two honest volunteers run 100 team tasks while mallory, with its own URL only,
    attacks the team's queues, kombu's keys, results, credit, status reports, remote
    control and events, and drops every task it is given: Redis refuses (NOPERM) all that
    is outside its namespace, and logs only those refusals; every task completes on an
    honest volunteer, credited to it; what mallory writes in its namespace is shown, if at
    all, bounded and under its own name."""
    admin.acl_log_reset()
    coordinator = fleet.coordinator()
    for name in HONEST:
        fleet.worker(name)
    tap = EventTap(broker.client()).start()
    try:
        # A team task done before mallory shows up: mallory never holds it.
        before = app.signature("compute.diag.noop").delay()
        assert before.get(timeout=TIMEOUT)["hostname"] in ("alice@h", "bob@h")

        mallory = hostiles["mallory"]
        mallory.hardware = {"cores": 4096, "ram_bytes": 2**60, "gpus": []}
        forged: dict[str, str] = {}

        def forge_events(task) -> None:
            """On its first task: a forged 'succeeded' for a task it does not hold, then for
            the one it holds, both in alice's name."""
            if forged:
                return
            mallory.publish_event("task-succeeded", before.id, "alice@h", result=FORGED)
            mallory.publish_event("task-succeeded", task.id, "alice@h", result=FORGED)
            forged.update(other=before.id, held=task.id)

        mallory.on_task = forge_events
        mallory.mode = "drop"

        # 1. The team's queue, while 100 tasks wait in it.
        results = [app.signature("compute.diag.noop").delay() for _ in range(100)]
        assert admin.llen("cpu") > 0
        junk = envelope([[], {}, None], headers={"task": "compute.diag.noop",
                                                 "id": str(uuid.uuid4())})
        for command in (("DEL", "cpu"), ("LTRIM", "cpu", 1, 0), ("RPOP", "cpu"),
                        ("LPUSH", "cpu", junk), ("LMOVE", "cpu", "vol:mallory:cpu", "RIGHT",
                                                 "LEFT")):
            assert mallory.refused(*command), command
        # 2. kombu's shared keys.
        assert mallory.refused("DEL", "unacked", "unacked_index")
        assert mallory.refused("ZADD", "unacked_index", 0, "x")
        assert mallory.refused("HSET", "unacked", "x", junk)

        # 8. It takes work and drops it: one message popped and thrown away, the rest of its
        # queue deleted, every round it gets.
        mallory.start()
        done = [r.get(timeout=TIMEOUT) for r in results]
        assert len(done) == 100
        assert {d["hostname"] for d in done} <= {"alice@h", "bob@h"}
        assert mallory.popped, "mallory never got a task to drop"
        assert mallory.deleted, "mallory never deleted its queue with tasks in it"
        assert "dropped it" in coordinator.log_text()
        wait_idle_coordinator(broker)
        assert credit_of(broker, "mallory")["tasks"] == 0
        assert honest_credit(broker) == 101

        # 7. Events: the forged one for a task it does not hold never reaches the team; the
        # one for a task it held arrives in its own name.
        assert mallory.publish_refused("/0.celeryev/task.succeeded", task_event(
            "task-succeeded", before.id, "alice@h", result=FORGED))
        assert forged, "mallory sent no event"
        held = wait_for(lambda: [e for e in tap.about(forged["held"])
                                 if e.get("result") == FORGED], 10, what="relayed event")
        assert {e["hostname"] for e in held} == {"mallory@h"}
        assert not [e for e in tap.about(forged["other"]) if e.get("result") == FORGED]

        # 3. Results: the team's result record of a task it held, and of one it never held.
        stolen = next(iter(mallory.popped))
        for task_id in (stolen, before.id):
            assert mallory.refused("SET", f"celery-task-meta-{task_id}", task_meta(
                task_id, {"hostname": "mallory@evil", "forged": FORGED}))
        # ... and a late result in its own namespace for the task it dropped: not its any more.
        mallory.answer(stolen, {"hostname": "mallory@evil", "forged": FORGED})
        time.sleep(1.5)  # several sweeps, and the hint
        for task_id in (stolen, before.id):
            true = app.AsyncResult(task_id).get(timeout=5)
            assert true["hostname"] in ("alice@h", "bob@h") and "forged" not in true

        # 4. Credit: the team's table refuses it; what it writes in its own namespace is
        # not credit.
        assert mallory.refused("HSET", "idle-accel:credit:mallory", "tasks", 1_000_000_000)
        assert mallory.refused("HINCRBY", "idle-accel:credit:alice@h", "tasks", -50)
        for name in ("mallory", "mallory@evil"):
            mallory.client.hset(f"vol:mallory:{keys.credit(name)}",
                                mapping={"tasks": 1_000_000_000, "cpu_seconds": 1e12})
        mallory.client.set(f"vol:mallory:{keys.credited(stolen)}", "1000000 0")
        time.sleep(1.0)
        table = credit.table(admin)
        assert max(row["tasks"] for row in table) < 1000
        assert credit_of(broker, "mallory")["tasks"] == 0
        assert credit_of(broker, "mallory@evil")["tasks"] == 0
        assert honest_credit(broker) == 101

        # 5. Status: a ghost worker, an impostor in alice's name, malformed reports.
        big = {"cores": 4096, "ram_bytes": 2**60, "gpus": []}
        mallory.write_report("ghost@evil", mallory.report(node="ghost@evil", hardware=big))
        mallory.write_report("alice@h", mallory.report(node="alice@h", hardware=big))
        mallory.write_report("x@bad-hardware", mallory.report(node="x@bad-hardware",
                                                              hardware="x"))
        mallory.write_report("x@bad-concurrency", mallory.report(node="x@bad-concurrency",
                                                                 concurrency="many"))
        mallory.write_report("x@bad-state", mallory.report(node="x@bad-state", state=["idle"]))
        mallory.write_report("x@not-json", "{not json at all")
        mallory.write_report("x@a-list", [1, 2, 3])
        assert mallory.refused("DEL", keys.worker("alice@h"))
        assert mallory.refused("SET", keys.worker("ghost@evil"), json.dumps(mallory.report()))
        wait_for(lambda: admin.exists(keys.worker("mallory@h")), 10,
                 what="the impostor report, under mallory's name")
        shown = idle_accel(broker, "fleet", "status", "--json")
        assert shown.returncode == 0, shown.stderr
        workers = {doc["node"]: doc for doc in json.loads(shown.stdout)["workers"]}
        assert "ghost@evil" not in workers
        assert {node for node, doc in workers.items() if doc.get("volunteer") == "mallory"} == \
            {"mallory@evil", "mallory@h", "mallory@bad-hardware"}
        assert workers["mallory@evil"]["hardware"]["cores"] == 512
        assert workers["mallory@h"]["hardware"]["cores"] == 512
        assert workers["mallory@bad-hardware"]["hardware"]["cores"] == 1
        assert workers["alice@h"]["volunteer"] == "alice"
        own = json.loads(admin.get("vol:alice:" + keys.worker("alice@h")))
        assert workers["alice@h"]["hardware"]["cores"] == own["hardware"]["cores"] < 512
        table_view = idle_accel(broker, "fleet", "status")
        assert table_view.returncode == 0, table_view.stderr
        assert "ghost@evil" not in table_view.stdout

        # 6. Remote control: the team's pidbox, a forged reply, a forged pong.
        assert mallory.publish_refused("/0.celery.pidbox", envelope(
            {"method": "shutdown", "arguments": {}, "destination": None}))
        assert mallory.subscribe_refused("/0.celery.pidbox")
        assert mallory.refused("LPUSH", "x.reply.celery.pidbox", envelope(
            {"deadworker@nowhere": {"ok": "pong"}}))
        assert mallory.refused("SMEMBERS", "_kombu.binding.reply.celery.pidbox")
        # It answers every ping as deadworker@nowhere: on the team's channel (refused), and
        # in its namespace, where the coordinator relays the team's broadcasts and carries
        # answers back under mallory's own name only.
        forger = PidboxForger(mallory, "deadworker@nowhere").start()
        try:
            time.sleep(0.5)
            ping = idle_accel(broker, "ping", "--name", "deadworker@nowhere", "--timeout", "2")
            pong = idle_accel(broker, "ping", "--name", "mallory@nowhere", "--timeout", "5")
        finally:
            forger.stop()
        assert ping.returncode == 1, ping.stdout
        assert "no answer" in ping.stderr
        assert forger.refused >= 1 and forger.forged_in_team_queue == 0
        assert forger.forged >= 2  # both pings reached it, and its answers went back...
        assert pong.returncode == 0, pong.stderr  # ... as mallory@nowhere's

        # The fleet still works, and the coordinator never stopped.
        after = [app.signature("compute.diag.checksum", (f"after{i}",)).delay()
                 for i in range(4)]
        for i, result in enumerate(after):
            assert result.get(timeout=TIMEOUT)["sha256"] == \
                hashlib.sha256(f"after{i}".encode()).hexdigest()
        assert coordinator.alive
    finally:
        tap.stop()

    # 12. Redis logged every refusal: mallory's, and nobody else's.
    denials = acl_denials(admin)
    assert {d["user"] for d in denials} == {"vol-mallory"}, denials
    objects = {d["object"] for d in denials}
    expected = {"cpu", "unacked", "unacked_index", f"celery-task-meta-{stolen}",
                f"celery-task-meta-{before.id}", "idle-accel:credit:mallory",
                "idle-accel:credit:alice@h", keys.worker("alice@h"), keys.worker("ghost@evil"),
                "/0.celery.pidbox", "x.reply.celery.pidbox", "/0.celeryev/task.succeeded",
                "_kombu.binding.reply.celery.pidbox"}
    assert expected <= objects, expected - objects


# -- 9: wrong answers and a squatter against verified tasks ------------------------------------

WRONG = {"sha256": hashlib.sha256(b"mallory was here").hexdigest(), "rounds": 1}


def _true(text: str) -> dict:
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "rounds": 1}


def _verification_of(task_id: str) -> str:
    return task_id.rsplit("-", 1)[0]  # a replica's task id is VERIFICATION-N


def test_wrong_answers_never_win_a_verdict_and_a_squatter_cannot_block_one(
        app: Celery, fleet: Fleet, broker, admin, hostiles) -> None:
    """verify=2 with two honest volunteers: mallory answers every replica it gets with a
    wrong SUCCESS, then sits on every replica it gets (lease renewed, no answer). Each
    verdict is the true value from two honest hosts, its wrong answers are listed beside
    them, it earns nothing, and the deadline (8 s here) ends its squatting."""
    coordinator = fleet.coordinator("--deadline", "8")
    for name in HONEST:
        fleet.worker(name)
    mallory = hostiles["mallory"]
    mallory.mode = "lie"
    mallory.liar = lambda task: WRONG
    mallory.start()
    # The coordinator places work only on volunteers its sweep has seen; without this wait
    # a busy machine lets the two honest hosts take all 40 replicas before mallory shows up.
    _wait_swept(coordinator, admin, time.time())

    texts = [f"x{i}" for i in range(20)]
    results = [app.signature("compute.diag.checksum", (text,)).apply_async(verify=2)
               for text in texts]
    # 3. The verification records, the verdicts and the verified result are the team's.
    first = results[0].id
    assert mallory.refused("HSET", keys.verification(first), "result:" + first + "-1",
                           json.dumps({"host": "alice", "node": "alice@h", "result": WRONG,
                                       "error": None}))
    assert mallory.refused("HDEL", keys.verification(first), "k")
    assert mallory.refused("LPUSH", keys.VERDICTS, json.dumps({"id": first, "agreed": True}))
    assert mallory.refused("SET", f"celery-task-meta-{first}", task_meta(first, WRONG))

    for text, result in zip(texts, results, strict=True):
        assert result.get(timeout=TIMEOUT) == _true(text)
    lied = {_verification_of(task_id) for task_id in mallory.answered}
    assert lied, "mallory never got a replica to answer"

    wait_idle_coordinator(broker)
    verdicts = {v["id"]: v for v in verify.verdicts(admin, limit=1000)}
    for text, result in zip(texts, results, strict=True):
        verdict = verdicts[result.id]
        winners = verdict["groups"][0]
        assert verdict["agreed"], verdict
        assert {o["host"] for o in winners} <= set(HONEST) and len(winners) == 2, verdict
        assert all(o["result"] == _true(text) for o in winners)
    # Every verification it answered lists its wrong answer, apart from the winners.
    shown = idle_accel(broker, "fleet", "verdicts", "--json", "--limit", "100")
    assert shown.returncode == 0, shown.stderr
    listed = {v["id"]: v for v in json.loads(shown.stdout)["verdicts"]}
    for verification in lied:
        losers = [o for group in listed[verification]["groups"][1:] for o in group]
        assert [(o["host"], o["result"]) for o in losers] == [("mallory", WRONG)]
    assert credit_of(broker, "mallory")["tasks"] == 0
    assert honest_credit(broker) == 2 * len(texts)

    # A squatter: it takes each replica, keeps its lease fresh and never answers. The
    # assignment's deadline takes it back; each verdict is still reached, by honest hosts.
    mallory.mode = "squat"
    more = [f"y{i}" for i in range(4)]
    late = [app.signature("compute.diag.checksum", (text,)).apply_async(verify=2)
            for text in more]
    for text, result in zip(more, late, strict=True):
        assert result.get(timeout=TIMEOUT) == _true(text)
    assert mallory.squatted, "mallory never got a replica to squat on"
    assert "missed its deadline" in coordinator.log_text()
    verdicts = {v["id"]: v for v in verify.verdicts(admin, limit=1000)}
    for result in late:
        assert {o["host"] for o in verdicts[result.id]["groups"][0]} <= set(HONEST)
    wait_idle_coordinator(broker)
    assert credit_of(broker, "mallory")["tasks"] == 0
    assert coordinator.alive


# -- 10, 11: quotas and revocation -------------------------------------------------------------

MIB = 1024 * 1024
#: What Redis answers a disabled user (WRONGPASS, or its connection closed).
DISABLED = "user is disabled|Connection closed by server"


def test_quota_breaches_and_revocation_switch_hostile_volunteers_off(
        app: Celery, fleet: Fleet, broker, admin, hostiles) -> None:
    """Four volunteers sit on the tasks they hold; then mallory fills its namespace, trudy
    opens connections, oscar floods pub/sub and an admin revokes eve. Each is switched off
    (WRONGPASS for its URL, no connection left, its keys gone) and what it held is done by
    the honest volunteer, who alone earns credit."""
    coordinator = fleet.coordinator("--quota-interval", "1", "--quota-bytes", str(8 * MIB),
                                    "--max-connections", "16",
                                    "--max-messages-per-second", "200")
    # Four hoarders: each takes 3 tasks (2 pool processes + 1 ahead) and sits on them.
    names = ("mallory", "trudy", "oscar", "eve")
    for name in names:
        hostiles[name].start()
    results = [app.signature("compute.diag.noop").delay() for _ in range(16)]
    wait_for(lambda: all(admin.scard(keys.assigned(n)) == 3 for n in names), 20,
             what="3 tasks held by each hostile volunteer")
    held = {n: {m.decode() for m in admin.smembers(keys.assigned(n))} for n in names}
    fleet.worker("alice")

    mallory, trudy, oscar = hostiles["mallory"], hostiles["trudy"], hostiles["oscar"]
    written = 0
    with pytest.raises(redis.RedisError, match=DISABLED):  # 10. memory: up to 40 MiB
        for written in range(1, 41):
            mallory.client.set(f"vol:mallory:blob:{written}", os.urandom(MIB))
        wait_for(lambda: not mallory.client.ping(), 10, what="mallory cut off")
    assert written * MIB > 8 * MIB, written
    flood = [trudy.connect() for _ in range(24)]  # 10. connections
    for connection in flood:
        connection.ping()
    pipe = oscar.client.pipeline(transaction=False)  # pub/sub messages
    for i in range(3000):
        pipe.publish(f"vol:oscar:celery-task-meta-{i}", "x")
    pipe.execute()
    revoked = idle_accel(broker, "volunteer", "revoke", "eve")  # 11. an admin revokes it
    assert revoked.returncode == 0, revoked.stderr

    def states() -> dict[str, str]:
        found = registry.records(admin)
        return {n: found[n]["state"] for n in names}

    wait_for(lambda: set(states().values()) == {"disabled"}, 20, what="all four disabled")
    reasons = {n: registry.records(admin)[n]["reason"] for n in names}
    assert "MiB in its namespace" in reasons["mallory"], reasons
    assert "connections" in reasons["trudy"], reasons
    assert "pub/sub messages" in reasons["oscar"], reasons
    assert reasons["eve"] == "revoked by an admin"

    for name in names:
        hostile = hostiles[name]
        hostile.stop()
        with pytest.raises(redis.AuthenticationError, match=DISABLED):
            hostile.connect().ping()  # a new connection with its URL
        assert "off" in admin.acl_getuser(f"vol-{name}")["flags"]
        wait_for(lambda n=name: not list(admin.scan_iter(match=f"vol:{n}:*")), 10,
                 what=f"{name}'s keys removed")
    users = [str(c.get("user")) for c in admin.client_list()]
    assert not [u for u in users if u in {f"vol-{n}" for n in names}], users
    for connection in flood:
        with pytest.raises(redis.RedisError):
            connection.ping()

    # Their tasks were reissued and done by the honest volunteer, who alone earned credit.
    done = {r.id: r.get(timeout=TIMEOUT)["hostname"] for r in results}
    assert set(done.values()) == {"alice@h"}
    assert {done[task_id] for n in names for task_id in held[n]} == {"alice@h"}
    wait_idle_coordinator(broker)
    assert credit_of(broker, "alice")["tasks"] == 16
    for name in names:
        assert credit_of(broker, name)["tasks"] == 0
    assert registry.records(admin)["alice"]["state"] == "active"
    assert coordinator.alive


# -- More of the same attacker: what it writes in its own namespace and its own report ---------
#
# Everything below stays inside mallory's namespace (Redis lets it): garbage where the
# coordinator expects a status report, a sorted set, a result, a credit claim, or a queue
# name that is not a task queue. None of it may stop the coordinator or cost the team
# anything: the coordinator must read a volunteer's keys as untrusted input.


def _wait_swept(coordinator, admin: redis.Redis, since: float, node: str = "mallory@evil"
                ) -> None:
    """Until the coordinator republished ``node``'s report written after ``since`` (it swept
    since then), or died."""

    def swept() -> bool:
        raw = admin.get(keys.worker(node))
        return raw is not None and json.loads(raw)["at"] > since + 1.0

    wait_for(lambda: swept() or not coordinator.alive, 20, what="a sweep after the attack")
    assert coordinator.alive, f"the coordinator died:\n{coordinator.log_tail(1500)}"


def test_text_in_a_status_report_cannot_break_fleet_status(fleet: Fleet, broker, admin,
                                                            hostiles) -> None:
    """Text a volunteer puts in its report (a reason, a GPU name) is shown as text: rich
    markup in it neither breaks ``fleet status`` nor styles or links the table."""
    coordinator = fleet.coordinator()
    mallory = hostiles["mallory"]
    markup = "[/][link=https://evil.example]click[/link][bold red]"
    mallory.hardware = {"cores": 2, "ram_bytes": 2**30,
                        "gpus": [{"name": markup, "memory_bytes": 2**30}]}
    mallory.report_overrides = {"reasons": [{"code": "input", "message": markup}]}
    mallory.start(work=False)
    _wait_swept(coordinator, admin, time.time())
    shown = idle_accel(broker, "fleet", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    table_view = idle_accel(broker, "fleet", "status")
    assert table_view.returncode == 0, table_view.stderr[-1500:]
    assert "mallory@evil" in table_view.stdout


GARBAGE = ("deep-report", "unacked_index-not-a-sorted-set", "result-not-a-string",
           "claim-not-a-string", "claim-not-a-number", "remote-control-answer-too-deep",
           "reply-queue-not-a-list")


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_in_its_own_namespace_cannot_stop_the_coordinator(
        app: Celery, fleet: Fleet, broker, admin, hostiles, garbage: str) -> None:
    """Mallory holds a task, then puts garbage where the coordinator reads it: the
    coordinator carries on, fresh work is done, and after mallory's revocation what it held
    is done too."""
    coordinator = fleet.coordinator()
    mallory = hostiles["mallory"]
    mallory.mode = "squat"  # it holds what it gets, its lease kept fresh
    mallory.start()
    held = app.signature("compute.diag.noop").delay()
    wait_for(lambda: held.id in mallory.squatted, 10, what="a task held by mallory")
    mallory.report_overrides = {"state": "busy"}  # and takes no more
    ns, meta = "vol:mallory:", f"vol:mallory:celery-task-meta-{held.id}"
    attacked = time.time()
    if garbage == "deep-report":  # JSON nested deeper than Python's recursion limit
        mallory.write_report("x@deep", TOO_DEEP)
    elif garbage == "unacked_index-not-a-sorted-set":
        mallory.client.set(ns + keys.UNACKED_INDEX, "x")
    elif garbage == "result-not-a-string":
        mallory.client.rpush(meta, "x")
        mallory.client.publish(meta, "x")
    elif garbage == "claim-not-a-string":  # then a result, so the coordinator reads its claim
        mallory.client.hset(ns + keys.credited(held.id), "cpu", "1")
        mallory.answer(held.id, {"hostname": "mallory@evil"})
    elif garbage == "claim-not-a-number":
        mallory.client.set(ns + keys.credited(held.id), "nan 0")
        mallory.answer(held.id, {"hostname": "mallory@evil"})
    elif garbage in ("remote-control-answer-too-deep", "reply-queue-not-a-list"):
        # Its answer to a ping the coordinator relays into its namespace.
        def answer(client: redis.Redis, queue: str, ticket: str, reply_to: dict) -> None:
            if garbage == "reply-queue-not-a-list":
                client.set(queue, "x")
            else:
                client.lpush(queue, raw_envelope(TOO_DEEP, headers={"ticket": ticket}))

        forger = PidboxForger(mallory, "mallory@evil", answer).start()
        try:
            time.sleep(0.5)
            idle_accel(broker, "ping", "--name", "mallory@evil", "--timeout", "2")
        finally:
            forger.stop()
        assert forger.forged >= 1
    _wait_swept(coordinator, admin, attacked)

    # The fleet still works...
    fleet.worker("alice", wait=False)
    fresh = app.signature("compute.diag.checksum", ("fresh",)).delay()
    wait_for(lambda: fresh.ready() or not coordinator.alive, TIMEOUT, what="a fresh task done")
    assert coordinator.alive, f"the coordinator died:\n{coordinator.log_tail(1500)}"
    assert fresh.get(timeout=5)["sha256"] == hashlib.sha256(b"fresh").hexdigest()
    # ... and once mallory is revoked, what it held is done by an honest volunteer (or was
    # done by mallory, for the garbage that came with a result): no task is lost.
    revoked = idle_accel(broker, "volunteer", "revoke", "mallory")
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: held.ready() or not coordinator.alive, TIMEOUT, what="the held task done")
    assert coordinator.alive, f"the coordinator died:\n{coordinator.log_tail(1500)}"
    assert held.get(timeout=5)["hostname"] in ("alice@h", "mallory@evil")
    assert credit_of(broker, "mallory")["tasks"] <= 1


@pytest.mark.parametrize("queue", ["idle-accel:verdicts", "idle-accel:volunteers"])
def test_a_queue_name_in_its_report_reaches_no_team_key(fleet: Fleet, broker, admin, hostiles,
                                                         queue: str) -> None:
    """Queue names it claims to consume are team lists the coordinator takes from: a team
    key that is no task queue (the fleet's verdicts, the volunteer records) is not one."""
    coordinator = fleet.coordinator()
    verdicts = [json.dumps({"id": f"v{i}", "agreed": False, "groups": []}) for i in range(3)]
    admin.rpush(keys.VERDICTS, *verdicts)
    mallory = hostiles["mallory"]
    records = admin.hgetall(keys.VOLUNTEERS)
    mallory.queues = ["cpu", queue]
    mallory.start()
    _wait_swept(coordinator, admin, time.time())
    assert [v.decode() for v in admin.lrange(keys.VERDICTS, 0, -1)] == verdicts
    assert admin.hgetall(keys.VOLUNTEERS) == records



def test_answers_to_remote_control_cannot_flood_the_teams_reply_queue(
        app: Celery, fleet: Fleet, admin, hostiles) -> None:
    """It answers a relayed ping 500 times: the team gets at most a few, under its name."""
    fleet.coordinator()
    mallory = hostiles["mallory"]

    def answer(client: redis.Redis, queue: str, ticket: str, reply_to: dict) -> None:
        pipe = client.pipeline()
        for _ in range(500):
            pipe.lpush(queue, envelope({"mallory@evil": {"ok": "pong"}},
                                       headers={"ticket": ticket, "clock": 1},
                                       exchange=reply_to["exchange"],
                                       routing_key=reply_to["routing_key"]))
        pipe.execute()

    forger = PidboxForger(mallory, "mallory@evil", answer).start()
    try:
        time.sleep(0.5)
        replies = app.control.ping(timeout=3.0)
    finally:
        forger.stop()
    assert forger.forged >= 1
    ours = [r for r in replies if any(node.startswith("mallory@") for node in r)]
    assert 1 <= len(ours) <= 8, len(ours)  # one per worker, a few workers at most
    assert admin.llen(f"{app.control.mailbox.oid}.reply.celery.pidbox") == 0
