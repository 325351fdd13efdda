"""Verified results (verify=k) on real workers: k distinct machines, agreement, tampering caught."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from compute import verify
from compute.errors import VerificationFailed
from worker.local.worker_process import cli_command

from .tamper import WRONG
from .waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def expected(text: str, rounds: int) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    for _ in range(rounds - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def machine(workers, name: str, host: str, *args: str, env: dict | None = None):
    return workers(name, "--concurrency", "1", "--host-id", host, *args, env=env)


def test_replicas_run_on_distinct_machines_only_and_agree(app, workers, broker):
    # Two workers on one machine cannot verify each other: nothing is decided...
    same = [machine(workers, name, "machine-a") for name in ("vf-a1", "vf-a2")]
    sent = [app.signature("compute.diag.checksum", (f"text {i}", 1000)).apply_async(verify=2)
            for i in range(6)]
    time.sleep(3)
    with broker.client() as client:
        reports = [verify.report(client, result.id) for result in sent]
    assert all(report["verdict"] is None for report in reports)
    assert any("already ran another replica" in worker.log_text() for worker in same)

    # ...until a second machine joins: then every task is verified by both machines.
    other = machine(workers, "vf-b", "machine-b")
    values = [result.get(timeout=TIMEOUT) for result in sent]

    assert values == [{"sha256": expected(f"text {i}", 1000), "rounds": 1000} for i in range(6)]
    with broker.client() as client:
        for result in sent:
            report = verify.report(client, result.id)
            assert sorted(r["host"] for r in report["replicas"]) == ["machine-a", "machine-b"]
            assert report["verdict"]["agreed"] is True
            nodes = {o["node"] for o in report["verdict"]["groups"][0]}
            assert other.node in nodes and nodes & {w.node for w in same}


def test_a_tampered_result_is_detected_with_the_machines_named(app, workers, broker,
                                                               broker_env):
    honest = machine(workers, "vf-honest", "machine-h")
    liar = machine(workers, "vf-liar", "machine-l", "--include", "tests.integration.tamper",
                   env={"PYTHONPATH": str(ROOT)})

    result = app.signature("compute.diag.checksum", ("payload", 10)).apply_async(verify=2)
    with pytest.raises(VerificationFailed) as failed:
        result.get(timeout=TIMEOUT)

    message = str(failed.value)
    assert "disagree" in message and honest.node in message and liar.node in message
    shown = subprocess.run([*cli_command(), "fleet", "verdicts", "--json", "--disagreed"],
                           env={**os.environ, **broker_env}, capture_output=True, text=True,
                           timeout=60)
    [verdict] = json.loads(shown.stdout)["verdicts"]
    assert verdict["id"] == result.id and verdict["agreed"] is False
    by_node = {group[0]["node"]: group[0]["result"]["sha256"] for group in verdict["groups"]}
    assert by_node == {honest.node: expected("payload", 10), liar.node: WRONG}
    assert wait_for(lambda: "results disagree" in liar.log_text() + honest.log_text(),
                    timeout=10, what="disagreement logged")


def test_the_cli_sends_a_verified_task_and_reports_the_agreed_value(workers, broker_env):
    for name, host in (("vf-c1", "machine-1"), ("vf-c2", "machine-2"), ("vf-c3", "machine-3")):
        machine(workers, name, host)
    done = subprocess.run([*cli_command(), "submit", "task", "compute.diag.checksum",
                           "--args", '["abc", 3]', "--verify", "3", "--timeout", "60"],
                          env={**os.environ, **broker_env}, capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 distinct machines" in done.stdout
    assert json.loads(done.stdout[done.stdout.index("{"):]) == {
        "sha256": expected("abc", 3), "rounds": 3}


def test_the_same_error_on_every_machine_is_the_verdict(app, workers):
    machine(workers, "vf-e1", "machine-e1")
    machine(workers, "vf-e2", "machine-e2")
    result = app.signature("compute.diag.checksum", ("x", 0)).apply_async(verify=2)
    with pytest.raises(VerificationFailed, match=r"failed the same way on every host.*rounds"):
        result.get(timeout=TIMEOUT)


def test_the_cli_sends_a_task_to_its_regions_queue(broker, broker_env):
    done = subprocess.run([*cli_command(), "submit", "task", "compute.diag.checksum",
                           "--args", '["a", 2]', "--region", "eu-west", "--no-wait"],
                          env={**os.environ, **broker_env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with broker.client() as client:  # no worker: it waits in the pinned queue only
        assert (client.llen("cpu@eu-west"), client.llen("cpu")) == (1, 0)
