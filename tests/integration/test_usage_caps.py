"""The volunteer's "how much" preferences on a real worker and a real Redis: a task over its
memory cap or its scratch-disk cap is ended and requeued with its reason in the log and the
status; the pool follows max_cpus_percent when the file changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from worker import preferences

from .gating import Owner, fleet, received, run_share
from .waiting import wait_for

TIMEOUT = 30
INCLUDE = "tests.integration.usage_tasks"


def start(workers, tmp_path: Path, name: str, usage: str, *args: str):
    prefs = tmp_path / f"{name}.toml"
    prefs.write_text(f"[control]\nport = 0\n\n[usage]\n{usage}\n")
    owner = Owner.away(tmp_path / f"{name}.owner")
    worker = workers(name, "--sensor", owner.flag, "--sensor-max-age", "0", "--idle-after", "0",
                     "--include", INCLUDE, *args, env={"IDLE_ACCEL_PREFERENCES": str(prefs)})
    return worker, prefs


def test_a_task_over_its_memory_cap_is_ended_and_handed_on_to_a_worker_that_can_run_it(
        app, workers, broker, tmp_path):
    worker, _ = start(workers, tmp_path, "caps-a", "task_memory_mb = 200", "--concurrency", "1")
    big = app.signature("usage.hog", (600, 30.0)).delay()

    wait_for(lambda: f"handing usage.hog[{big.id}] on to another worker" in worker.log_text(),
             timeout=TIMEOUT, what="ended, then handed on when it came back")
    log = worker.log_text()
    assert f"ended usage.hog[{big.id}]: used " in log and "> cap 200 MiB per task" in log
    assert big.state not in ("SUCCESS", "FAILURE")
    ended = wait_for(lambda: fleet(broker)[worker.node].get("ended"), timeout=15,
                     what="ended in the status")
    assert ended[0]["task_id"] == big.id and ended[0]["name"] == "usage.hog"
    assert ended[0]["reason"].endswith("> cap 200 MiB per task")

    # A volunteer without the cap runs it; the capped one never ran it again, and still
    # runs tasks that fit.
    roomy, _ = start(workers, tmp_path, "caps-roomy", "", "--concurrency", "1")
    assert big.get(timeout=60)["mib"] == 600
    assert received([worker], big.id) == 1 and received([roomy], big.id) == 1
    assert app.signature("usage.hog", (20, 0.0)).delay().get(timeout=TIMEOUT)["mib"] == 20


def test_a_small_task_under_the_memory_cap_succeeds(app, workers, broker, tmp_path):
    worker, _ = start(workers, tmp_path, "caps-b", "task_memory_mb = 200\ntotal_memory_mb = 300",
                      "--concurrency", "1")
    assert app.signature("usage.hog", (30, 1.0)).delay().get(timeout=TIMEOUT)["mib"] == 30
    assert "ended usage.hog" not in worker.log_text()


def test_scratch_folder_per_task_removed_after_and_over_its_cap_the_task_is_ended(
        app, workers, broker, tmp_path):
    worker, prefs = start(workers, tmp_path, "caps-c", "scratch_disk_gb = 0.05",
                          "--concurrency", "1")
    small = app.signature("usage.scratch", (5, 0.0)).delay().get(timeout=TIMEOUT)
    assert small["tmpdir"] == small["folder"] and "idle-accel-scratch" in small["folder"]
    # removed when the task ended (just after its result is stored)
    wait_for(lambda: not os.path.exists(small["folder"]), what="scratch folder removed")

    big = app.signature("usage.scratch", (80, 30.0)).delay()
    wait_for(lambda: f"ended usage.scratch[{big.id}]: scratch folder " in worker.log_text(),
             timeout=TIMEOUT, what="ended for its scratch folder")
    assert "> cap 51 MiB" in worker.log_text()
    preferences.update(prefs, {"usage": {"scratch_disk_gb": None}})
    done = big.get(timeout=60)
    wait_for(lambda: not os.path.exists(done["folder"]), what="scratch folder removed")


def test_the_pool_follows_max_cpus_percent_when_the_file_changes(app, workers, broker, tmp_path):
    cores = psutil.cpu_count() or 1
    worker, prefs = start(workers, tmp_path, "caps-d", "max_cpus_percent = 1")

    def pool() -> int:
        return len(psutil.Process(worker.pid).children())

    wait_for(lambda: pool() == 1, timeout=TIMEOUT, what="one pool process")
    preferences.update(prefs, {"usage": {"max_cpus_percent": 100}})
    wait_for(lambda: pool() == cores, timeout=TIMEOUT, what=f"{cores} pool processes")
    preferences.update(prefs, {"usage": {"max_cpus_percent": 1}})
    wait_for(lambda: pool() == 1, timeout=TIMEOUT, what="back to one")
    assert app.signature("usage.hog", (1, 0.0)).delay().get(timeout=TIMEOUT)["mib"] == 1


def test_a_burn_runs_half_the_time_at_cpu_limit_50_and_fully_once_lifted(
        app, workers, broker, tmp_path):
    worker, prefs = start(workers, tmp_path, "caps-e", "cpu_limit_percent = 50",
                          "--concurrency", "1")
    result = app.signature("compute.diag.burn", (30.0,)).delay()
    wait_for(lambda: result.state == "STARTED", timeout=TIMEOUT, what="burn started")
    child = psutil.Process(worker.pid).children()[0]
    time.sleep(1.0)

    cpu, runnable = run_share(child, 4.0)
    print(f"\nburn at cpu_limit_percent 50: CPU share {cpu:.3f}, runnable share {runnable:.3f}")
    assert 0.35 <= runnable <= 0.65, runnable  # the time it was not stopped
    assert cpu <= 0.65, cpu  # what a volunteer's task manager shows
    assert fleet(broker)[worker.node]["plan"]["duty"] == 0.5

    preferences.update(prefs, {"usage": {"cpu_limit_percent": None}})
    time.sleep(2.0)
    cpu, runnable = run_share(child, 2.0)
    assert runnable > 0.95
    result.revoke(terminate=True)
