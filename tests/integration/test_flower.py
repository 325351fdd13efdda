"""Flower for admins, for real: basic auth on the test Redis, its API, metrics and workers page."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from worker.local.flower_process import FlowerProcess

from .tools import require
from .waiting import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_flower_needs_credentials_and_shows_the_workers(app, workers, flower):
    worker = workers("admin-view", "--concurrency", "1")
    app.signature("compute.diag.noop").delay().get(timeout=30)

    refused, _ = flower.get("/api/workers", auth=False)
    page_refused, _ = flower.get("/workers", auth=False)
    listed = wait_for(lambda: worker.node in json.loads(flower.get("/api/workers?refresh=1")[1])
                      and json.loads(flower.get("/api/workers")[1]), timeout=30,
                      what="worker in Flower")
    metrics_status, metrics = flower.get("/metrics", auth=False)

    assert (refused, page_refused) == (401, 401)
    assert listed[worker.node]["stats"]["idle_accel"]["state"] == "idle"  # owner state
    assert metrics_status == 200
    for name in (b"flower_events_total", b"flower_worker_online"):  # the Grafana board uses
        assert name in metrics
    assert flower.password not in flower.log_text()


def test_a_screenshot_of_flowers_workers_page_shows_the_running_workers(
        app, workers, flower, tmp_path):
    chromium = require("chromium")
    nodes = [workers(name, "--concurrency", "1").node for name in ("shot-a", "shot-b")]
    wait_for(lambda: all(node in flower.get("/api/workers?refresh=1")[1].decode()
                         for node in nodes), timeout=30, what="workers in Flower")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "flower-workers.png"
    shot.unlink(missing_ok=True)
    url = f"http://{flower.user}:{flower.password}@127.0.0.1:{flower.port}/workers"

    dump = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=5000", "--window-size=1280,800", f"--screenshot={shot}", url],
        capture_output=True, timeout=120, check=True)

    assert all(node in dump.stdout for node in nodes)  # what the page rendered
    assert shot.exists() and shot.stat().st_size > 10_000


def test_flower_shows_enrolled_volunteers_and_their_tasks_through_the_coordinator(
        app, fleet, flower):
    fleet.coordinator()
    fleet.worker("alice")
    result = app.signature("compute.diag.noop").delay()
    assert result.get(timeout=30)["hostname"] == "alice@h"

    def task_in_flower():
        tasks = json.loads(flower.get("/api/tasks")[1])
        return tasks.get(result.id, {}).get("state") == "SUCCESS" and tasks[result.id]

    task = wait_for(task_in_flower, timeout=30, what="the volunteer's task in Flower")
    workers = json.loads(flower.get("/api/workers?refresh=1")[1])
    assert task["worker"] == "alice@h"  # from its events, relayed with the hostname forced
    assert "alice@h" in workers  # remote control relayed: Flower's inspect reaches it


def test_plain_celery_flower_still_works_without_the_fleet_page(broker_env, tmp_path):
    plain = FlowerProcess(env=broker_env, log_path=tmp_path / "plain-flower.log",
                          plain=True).start()
    try:
        plain.wait_ready()
        workers, _ = plain.get("/workers")
        refused, _ = plain.get("/workers", auth=False)
        fleet, _ = plain.get("/fleet")
    finally:
        plain.stop()

    assert (workers, refused, fleet) == (200, 401, 404)
