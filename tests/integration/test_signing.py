"""Signed tasks on real workers: a worker that trusts the team's key runs only what it signed.

Nor does it act on behalf of a task it refused: an unsigned message's errbacks,
chain and chord are dropped (an old-style errback such as ``celery.starmap``
would otherwise run any task, called directly in the worker's process). A
signed task's continuations are covered by its signature, and a grant is good
for one task id, its own arguments after exactly ``lead`` unsigned ones, and
the continuations granted with it. Messages are altered in the Redis list
(``requeue_altered``) before a worker takes them, as anyone with the broker's
credentials could.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from compute import plans, signing
from compute.app import create_app
from compute.settings import Settings
from worker.celery_gate import close_client
from worker.local.worker_process import cli_command

from .fault_tasks import RUNS
from .signing_tasks import SPY
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
INCLUDE = "tests.integration.fault_tasks,tests.integration.signing_tasks"
QUEUE = "cpu"  # the list the workers consume (kombu LPUSHes, the worker BRPOPs)


@pytest.fixture
def team_keys(tmp_path) -> tuple[Path, Path]:
    done = subprocess.run([*cli_command(), "keys", "new", "--out", str(tmp_path / "keys")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key, pub = tmp_path / "keys" / "team.key", tmp_path / "keys" / "team.pub"
    assert key.stat().st_mode & 0o777 == 0o600
    return key, pub


@pytest.fixture
def client_app(broker):
    """Client apps on the test broker: signing with a key, or not signing."""
    made = []

    def make(key: Path | None = None):
        made.append(create_app(Settings.load(broker_url=broker.url(0),
                                             signing_key=str(key) if key else None)))
        return made[-1]

    yield make
    for app in made:
        close_client(app)


def start_strict(workers, team_keys, name: str = "signed-only"):
    return workers(name, "--concurrency", "1", "--include", INCLUDE,
                   env={"IDLE_ACCEL_TRUSTED_KEY": str(team_keys[1]), "PYTHONPATH": str(ROOT)})


@pytest.fixture
def strict_worker(workers, team_keys):
    return start_strict(workers, team_keys)


def spied(broker) -> dict[str, dict]:
    """What ``signing.spy`` and ``signing.fail`` ran with, by task id (their code ran)."""
    with broker.client() as client:
        return {key.decode(): json.loads(value) for key, value in client.hgetall(SPY).items()}


def requeue_altered(broker, task_id: str, alter: Callable[[dict, list], Any]) -> None:
    """Alter the queued message of ``task_id`` in place: ``alter(headers, [args, kwargs,
    embed])``; no worker may be consuming the queue yet."""
    with broker.client() as client:
        for index, raw in enumerate(client.lrange(QUEUE, 0, -1)):
            envelope = json.loads(raw)
            if envelope["headers"].get("id") != task_id:
                continue
            body = json.loads(base64.b64decode(envelope["body"]))
            alter(envelope["headers"], body)
            envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
            client.lset(QUEUE, index, json.dumps(envelope))
            return
    raise AssertionError(f"{task_id} is not waiting in {QUEUE!r}")


def test_a_signed_task_runs_and_an_unsigned_one_is_refused_before_its_code_runs(
        strict_worker, team_keys, client_app, broker):
    signed = client_app(team_keys[0]).send_task("faults.effect", ("noop", 0))
    unsigned = client_app().send_task("faults.effect", ("noop", 0))

    assert signed.get(timeout=TIMEOUT)["hostname"] == strict_worker.node
    with pytest.raises(signing.UnsignedTask, match="not signed"):
        unsigned.get(timeout=TIMEOUT)
    with broker.client() as client:
        assert client.hget(RUNS, signed.id) == b"1"
        assert client.hget(RUNS, unsigned.id) is None  # its code never ran
    assert wait_for(lambda: f"faults.effect[{unsigned.id}] refused" in strict_worker.log_text(),
                    timeout=10, what="the refusal logged")


def test_another_key_or_altered_arguments_are_refused(strict_worker, team_keys, client_app,
                                                      tmp_path):
    other_key, _ = signing.new_keys(tmp_path / "other")
    forged = client_app(other_key).send_task("compute.diag.checksum", ("x", 1))
    with pytest.raises(signing.UnsignedTask, match="does not match"):
        forged.get(timeout=TIMEOUT)

    # a genuine signature, moved onto other arguments (a replayed, altered message)
    options = {"task_id": "altered-1"}
    signing.sign_options(signing.load_private(str(team_keys[0])), "compute.diag.checksum",
                         ("x", 1), {}, options)
    altered = client_app().send_task("compute.diag.checksum", ("x", 2), **options)
    with pytest.raises(signing.UnsignedTask, match="does not match"):
        altered.get(timeout=TIMEOUT)


def test_a_signed_job_runs_its_assemble_step_through_the_grant(strict_worker, team_keys,
                                                               client_app, tmp_path):
    source = tmp_path / "t.csv"
    with source.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["k", "v"])
        rows.writerows([["a", i] for i in range(50)] + [["b", 1]] * 10)
    output = tmp_path / "out.csv"
    app = client_app(team_keys[0])
    job = plans.aggregate(app, str(source), {"group_by": ["k"],
                                             "aggregate": {"n": ["*", "count"]}},
                          str(output), chunk_bytes=100)
    assert len(job.parts) > 1
    app.AsyncResult(job.assemble).get(timeout=TIMEOUT)
    with output.open(newline="") as f:
        assert list(csv.reader(f)) == [["k", "n"], ["a", "50"], ["b", "10"]]


def test_signed_chains_links_and_errbacks_run_through_the_grants(strict_worker, team_keys,
                                                               client_app, broker, tmp_path):
    team = client_app(team_keys[0])

    def spy(*args):
        return team.signature("signing.spy", args)

    def touch(path: Path):  # immutable: sent on (or, as an errback, called) with no result
        return team.signature("signing.touch", (str(path),), immutable=True)

    chained = (spy(1) | spy(2) | spy(3)).apply_async()
    assert chained.get(timeout=TIMEOUT) == [[[1], 2], 3]
    linked = team.send_task("signing.spy", (4,), link=[spy(5), touch(tmp_path / "linked")],
                            chain=[spy(7), spy(6)])
    failed = team.send_task("signing.fail", (8,),
                            link_error=[spy(9), touch(tmp_path / "errback")])
    assert linked.get(timeout=TIMEOUT) == [4]
    with pytest.raises(ValueError, match="fails"):
        failed.get(timeout=TIMEOUT)

    def ran_with() -> list:
        return sorted((record["args"] for record in spied(broker).values()), key=str)

    expected = sorted([[1], [[1], 2], [[[1], 2], 3], [4], [[4], 5], [[4], 6], [[[4], 6], 7],
                       [8], [failed.id, 9]], key=str)
    wait_for(lambda: ran_with() == expected, timeout=TIMEOUT, what="every step and link run")
    wait_for((tmp_path / "linked").exists, timeout=TIMEOUT, what="the immutable link run")
    wait_for((tmp_path / "errback").exists, timeout=TIMEOUT,  # an old-style errback,
             what="the errback called in the worker")  # called in the failed task's process
    assert "refused" not in strict_worker.log_text()


def test_an_unsigned_task_s_errbacks_chain_and_chord_are_not_acted_on(
        strict_worker, team_keys, client_app, broker, tmp_path):
    plain = client_app()  # an attacker: the broker's credentials, no signing key
    touched = tmp_path / "ran"
    # celery.starmap as an old-style errback: Celery calls it directly, in the worker's
    # process, when the task fails; it then calls signing.touch directly too
    starmap = plain.signature("celery.starmap",
                              (plain.signature("signing.touch"), [[str(touched)]]),
                              immutable=True)
    via_errback = plain.send_task("compute.diag.noop", link_error=starmap)
    # a chain Celery would fail (storing FAILURE under any id) and a chord part it would count
    victim, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    via_chord = plain.send_task(
        "compute.diag.noop", chain=[plain.signature("signing.touch", (str(touched),),
                                                    task_id=victim)],
        chord=plain.signature("signing.touch", (str(touched),), task_id=str(uuid.uuid4())),
        group_id=group_id, group_index=0)
    after = client_app(team_keys[0]).send_task("compute.diag.noop")

    for refused in (via_errback, via_chord):
        with pytest.raises(signing.UnsignedTask, match="not signed"):
            refused.get(timeout=TIMEOUT)
    assert after.get(timeout=TIMEOUT)["hostname"] == strict_worker.node  # still serving
    assert not touched.exists()  # no errback, chain step or chord body ran
    assert plain.AsyncResult(victim).state == "PENDING"  # no chain failed on its behalf
    with broker.client() as client:  # no chord part counted under its group
        assert [key for key in client.keys("*") if group_id.encode() in key] == []


def test_a_signed_task_whose_continuations_were_altered_is_refused(workers, team_keys,
                                                                    client_app, broker,
                                                                    tmp_path):
    team = client_app(team_keys[0])
    honest, evil = tmp_path / "honest", tmp_path / "evil"

    def touch(path: Path):
        return team.signature("signing.touch", (str(path),), immutable=True)

    def starmap_touch(path: Path) -> dict:
        return dict(team.signature("celery.starmap", (touch(path), [[str(path)]]),
                                   immutable=True))

    def link_args(headers, body):
        body[2]["callbacks"][0]["args"] = [str(evil)]

    def link_task(headers, body):
        body[2]["callbacks"][0] = {**body[2]["callbacks"][0], "task": "celery.starmap",
                                   "args": [touch(evil), [[str(evil)]]]}

    def errback_added(headers, body):
        body[2]["errbacks"] = [starmap_touch(evil)]

    def chain_step(headers, body):
        body[2]["chain"][0]["args"] = [str(evil)]

    def chord_part_moved(headers, body):
        headers["group"] = str(uuid.uuid4())

    def stripped(headers, body):
        body[2].update(callbacks=None, errbacks=None, chain=None, chord=None)

    # sent while no worker consumes the queue, altered there before one takes them
    sent = {
        link_args: team.send_task("signing.spy", ("a",), link=touch(honest)),
        link_task: team.send_task("signing.spy", ("b",), link=touch(honest)),
        errback_added: team.send_task("signing.fail", ("c",)),
        chain_step: team.send_task("signing.spy", ("d",), chain=[touch(honest)]),
        chord_part_moved: team.send_task("signing.spy", ("e",), group_id=str(uuid.uuid4()),
                                         group_index=0, chord=touch(honest)),
        stripped: team.send_task("signing.spy", ("f",), link=touch(tmp_path / "dropped")),
    }
    untouched = team.send_task("signing.spy", ("g",), link=touch(honest))
    for alter, result in sent.items():
        requeue_altered(broker, result.id, alter)
    worker = start_strict(workers, team_keys)

    for alter, result in sent.items():
        if alter is stripped:  # carries nothing: runs, and nothing is done on its behalf
            assert result.get(timeout=TIMEOUT) == ["f"]
            continue
        with pytest.raises(signing.UnsignedTask, match="signature does not match"):
            result.get(timeout=TIMEOUT)
    assert untouched.get(timeout=TIMEOUT) == ["g"]
    wait_for(honest.exists, timeout=TIMEOUT, what="the untouched task's link run")
    ran = {record["args"][0] for record in spied(broker).values()}
    assert ran == {"f", "g"}  # the altered ones' code never ran
    assert not evil.exists() and not (tmp_path / "dropped").exists()
    assert worker.alive


def test_a_grant_is_good_for_its_own_id_arguments_and_continuations_only(
        strict_worker, team_keys, client_app, broker, tmp_path):
    plain = client_app()  # a volunteer replaying grants it saw in signed messages
    private = signing.load_private(str(team_keys[0]))
    evil = tmp_path / "evil"

    def granted(task: str, args: tuple, kwargs: dict | None = None, **options) -> dict:
        """A continuation as the team grants it: a signed message's link, as sent."""
        sent = {"task_id": str(uuid.uuid4()),
                "link": plain.signature(task, args, kwargs or {}, **options)}
        signing.sign_options(private, "compute.diag.noop", (), {}, sent)
        (sig,) = sent["link"]
        return sig

    def grant_of(sig: dict) -> dict:
        return sig["options"]["headers"][signing.GRANT_HEADER]

    def replay(sig, args, task_id=None, grant=None, **options):
        return plain.send_task(sig["task"], args, sig["kwargs"],
                               task_id=task_id or sig["options"]["task_id"],
                               headers={signing.GRANT_HEADER: grant or grant_of(sig)},
                               **options)

    def checksum() -> dict:
        return granted("compute.diag.checksum", ("y",), {"rounds": 2}, immutable=True)

    def spy() -> dict:
        return granted("signing.spy", ("y",))

    fixed, passed = checksum(), spy()
    assert (grant_of(fixed)["id"], grant_of(fixed)["lead"]) == (fixed["options"]["task_id"], 0)
    assert (grant_of(passed)["id"], grant_of(passed)["lead"]) == (
        passed["options"]["task_id"], 1)
    # as the worker that ran the parent sends them on: nothing first for an immutable
    # signature, the parent's result first otherwise
    assert replay(fixed, ("y",)).get(timeout=TIMEOUT)["rounds"] == 2
    assert replay(passed, ({"any": "result"}, "y")).get(timeout=TIMEOUT) == [
        {"any": "result"}, "y"]

    lead_altered, null_id = spy(), spy()
    forged = {**grant_of(null_id), "id": None}  # signed by the team, for no id in particular
    forged["sig"] = base64.b64encode(private.sign(signing.grant_payload(
        "signing.spy", None, ["y"], {}, 1, forged["next"]))).decode()
    starmap = plain.signature("celery.starmap", (plain.signature("signing.touch"),
                                                 [[str(evil)]]), immutable=True)
    refused = {
        "another id": replay(checksum(), ("y",), task_id=str(uuid.uuid4())),
        "a leading argument where the grant has none": replay(checksum(), ("x", "y")),
        "none where it has one": replay(spy(), ("y",)),
        "two where it has one": replay(spy(), ("x", "x", "y")),
        "the grant's lead altered": replay(lead_altered, ("y",),
                                           grant={**grant_of(lead_altered), "lead": 0}),
        "a grant with id null": replay(null_id, ("x", "y"), task_id=str(uuid.uuid4()),
                                       grant=forged),
        "an errback added": replay(granted("signing.fail", ("y",)), ("x", "y"),
                                   link_error=starmap),
    }
    for case, result in refused.items():
        with pytest.raises(signing.UnsignedTask, match="grant does not match"):
            result.get(timeout=TIMEOUT)
            pytest.fail(f"{case}: ran")
    assert [r["args"] for r in spied(broker).values()] == [[{"any": "result"}, "y"]]
    assert not evil.exists()
