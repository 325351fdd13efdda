"""Signed tasks on real workers: a worker that trusts the team's key runs only what it signed."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from compute import plans, signing
from compute.app import create_app
from compute.settings import Settings
from worker.celery_gate import close_client
from worker.local.worker_process import cli_command

from .fault_tasks import RUNS
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


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


@pytest.fixture
def strict_worker(workers, team_keys):
    return workers("signed-only", "--concurrency", "1", "--include",
                   "tests.integration.fault_tasks",
                   env={"IDLE_ACCEL_TRUSTED_KEY": str(team_keys[1]), "PYTHONPATH": str(ROOT)})


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


def test_a_granted_continuation_runs_and_an_altered_one_is_refused(strict_worker, team_keys,
                                                                    client_app):
    app = client_app()
    options = {"task_id": "parent-1",
               "link": app.signature("compute.diag.checksum", ("y",), {"rounds": 2},
                                     task_id="next-1")}
    signing.sign_options(signing.load_private(str(team_keys[0])), "compute.diag.noop", (), {},
                         options)
    grant = options["link"]["options"]["headers"][signing.GRANT_HEADER]

    # as the worker that ran the parent sends it on: its result first, the granted args after
    sent_on = app.send_task("compute.diag.checksum", ("y",), {"rounds": 2}, task_id="next-1",
                            headers={signing.GRANT_HEADER: grant})
    assert sent_on.get(timeout=TIMEOUT)["rounds"] == 2
    altered = app.send_task("compute.diag.checksum", ("y",), {"rounds": 3}, task_id="next-1b",
                            headers={signing.GRANT_HEADER: {**grant, "id": "next-1b"}})
    with pytest.raises(signing.UnsignedTask, match="grant does not match"):
        altered.get(timeout=TIMEOUT)
