"""The volunteer's preferences on a real worker and a real Redis: a file edit applies without
a restart, GPU tasks are ended rather than left stopped in GPU memory, and chosen work goes on
while the owner is present."""

from __future__ import annotations

import time

import psutil

from worker import preferences

from .gating import Owner, fleet, received
from .waiting import wait_for, wait_for_state

TIMEOUT = 30


def start(workers, owner: Owner, prefs_path, name: str, *args: str):
    return workers(name, "--sensor", owner.flag, "--sensor-max-age", "0", "--idle-after", "0",
                   "--preempt-after", "300", "--preferences", str(prefs_path), *args)


def write(path, text: str) -> None:
    path.write_text("[control]\nport = 0\n" + text)


def test_pausing_in_the_file_stops_taking_within_a_couple_of_seconds_and_resume_restarts(
        app, workers, broker, tmp_path):
    prefs = tmp_path / "prefs.toml"
    write(prefs, "")
    owner = Owner.away(tmp_path / "owner")
    worker = start(workers, owner, prefs, "prefs-a", "--concurrency", "1")
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "idle", what="idle")

    preferences.update(prefs, {"when": {"paused": True}})
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "busy", timeout=5,
             what="paused worker reported busy")
    status = fleet(broker)[worker.node]
    assert status["consuming"] == [] and status["reasons"][0]["code"] == "paused"
    assert status["preferences"]["paused"] is True
    sent = app.signature("compute.diag.noop").delay()
    time.sleep(1.5)
    assert sent.state == "PENDING"

    preferences.update(prefs, {"when": {"paused": None}})
    assert sent.get(timeout=TIMEOUT)  # taken as soon as the pause lifts: the owner is away


def test_a_bad_edit_keeps_the_last_good_preferences_and_says_why(app, workers, broker, tmp_path):
    prefs = tmp_path / "prefs.toml"
    write(prefs, "[when]\npaused = true\n")
    owner = Owner.away(tmp_path / "owner")
    worker = start(workers, owner, prefs, "prefs-b", "--concurrency", "1")
    wait_for(lambda: fleet(broker)[worker.node].get("preferences", {}).get("paused"),
             what="paused read")
    prefs.write_text("[when]\npaused = maybe\n")  # not TOML: the pause must hold
    wait_for(lambda: fleet(broker)[worker.node].get("preferences_problem"), timeout=10,
             what="problem reported")
    status = fleet(broker)[worker.node]
    assert status["state"] == "busy" and "not TOML" in status["preferences_problem"]
    assert "preferences not applied, keeping the last good ones" in worker.log_text()


def test_a_gpu_task_is_ended_when_the_owner_returns_and_resumes_elsewhere_from_its_checkpoint(
        app, workers, broker, tmp_path):
    prefs = tmp_path / "prefs.toml"
    write(prefs, "")
    owner = Owner.away(tmp_path / "owner")
    first = start(workers, owner, prefs, "prefs-gpu", "--concurrency", "2", "--queues", "cpu,gpu")
    on_gpu = app.signature("compute.diag.burn", (3.0,)).apply_async(queue="gpu")
    on_cpu = app.signature("compute.diag.burn", (6.0,)).apply_async(queue="cpu")
    wait_for_state(on_gpu, "STARTED")
    wait_for_state(on_cpu, "STARTED")
    time.sleep(1.0)  # progress, checkpointed every 0.2 s

    owner.busy()
    wait_for(lambda: "ended GPU task compute.diag.burn" in first.log_text(), timeout=TIMEOUT,
             what="GPU task ended")
    wait_for(lambda: fleet(broker)[first.node]["state"] == "busy", what="busy")
    pool = psutil.Process(first.pid).children(recursive=True)
    assert psutil.STATUS_STOPPED in {p.status() for p in pool if p.is_running()}  # the CPU task
    assert on_cpu.state == "STARTED"  # stopped in place, not ended

    second = start(workers, Owner.away(tmp_path / "owner-b"), prefs, "prefs-gpu-b",
                   "--concurrency", "1", "--queues", "gpu")
    value = on_gpu.get(timeout=TIMEOUT)
    assert value["hostname"] == second.node and 0.5 <= value["resumed_from"] < 3.0
    assert received([first], on_gpu.id) == 1
    owner.idle()
    assert on_cpu.get(timeout=TIMEOUT)["hostname"] == first.node  # continued where it was


def test_cpu_work_goes_on_at_its_share_while_the_owner_is_present_and_gpu_work_does_not(
        app, workers, broker, tmp_path):
    prefs = tmp_path / "prefs.toml"
    write(prefs, "[when]\ncpu_while_present = 100\n")
    owner = Owner(tmp_path / "owner")  # present
    worker = start(workers, owner, prefs, "prefs-c", "--concurrency", "1", "--queues", "cpu,gpu")
    wait_for(lambda: fleet(broker)[worker.node]["consuming"] == ["cpu"], what="cpu consumed")
    status = fleet(broker)[worker.node]
    assert status["state"] == "busy" and status["plan"]["running"] == ["cpu"]
    on_cpu = app.signature("compute.diag.noop").apply_async(queue="cpu")
    on_gpu = app.signature("compute.diag.noop").apply_async(queue="gpu")
    assert on_cpu.get(timeout=TIMEOUT)
    time.sleep(1.0)
    assert on_gpu.state == "PENDING"
