"""The volunteer's control page on a real worker and a real Redis: refusals, the terminal's
``idle-accel volunteer status|pause|resume``, and the page in headless Chromium (snooze stops
taking within a couple of seconds, resume takes again, a preference edited in the form lands
in the file and the worker)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from pathlib import Path

import psutil

from worker import control_page
from worker.local.worker_process import cli_command

from .chromium import Chromium
from .gating import Owner, fleet, run_share
from .tools import require
from .waiting import wait_for, wait_for_state

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workers, tmp_path: Path, name: str, *args: str):
    """A worker whose owner is away, with its own preferences file and control page."""
    prefs = tmp_path / name / "preferences.toml"
    prefs.parent.mkdir()
    port = free_port()
    prefs.write_text(f"# the test's preferences\n[control]\nport = {port}\n\n"
                     "[when]\nidle_after = 0\n\n[usage]\ncpu_limit_percent = 100\n")
    owner = Owner.away(tmp_path / f"{name}.owner")
    worker = workers(name, "--sensor", owner.flag, "--sensor-max-age", "0", "--idle-after", "0",
                     "--concurrency", "1", env={"IDLE_ACCEL_PREFERENCES": str(prefs)})
    token_file = control_page.token_path(prefs)
    token = wait_for(lambda: control_page.read_token(token_file), timeout=TIMEOUT,
                     what="control page's token")
    return worker, prefs, port, token


def call(port: int, method: str, path: str, body=None, **headers: str | None):
    sent = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=None if body is None else json.dumps(body),
                       headers={k: v for k, v in sent.items() if v is not None})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def volunteer(prefs: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*cli_command(), "volunteer", *args, "--preferences", str(prefs)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_the_page_refuses_strangers_and_the_terminal_shows_and_pauses(
        app, workers, broker, broker_env, tmp_path):
    worker, prefs, port, token = start(workers, tmp_path, "control-a")
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "idle", what="idle")
    auth = {control_page.HEADER: token}

    no_token, _ = call(port, "GET", "/api/status")
    wrong_token, _ = call(port, "GET", "/api/status", **{control_page.HEADER: "guess"})
    cross_site, _ = call(port, "POST", "/api/pause", {}, Origin="http://evil.example", **auth)
    cookie_only, _ = call(port, "POST", "/api/pause", {},
                          Cookie=f"{control_page.COOKIE}={token}")  # no Origin, no header
    rebound, _ = call(port, "GET", "/api/status", Host=f"evil.example:{port}", **auth)
    assert (no_token, wrong_token, cross_site, cookie_only, rebound) == (401, 401, 403, 403, 421)
    assert "paused" not in prefs.read_text()

    burning = app.signature("compute.diag.burn", (15.0,)).delay()  # outlasts the CLI calls
    wait_for_state(burning, "STARTED")
    ok, data = call(port, "GET", "/api/status", **auth)
    shown = json.loads(data)
    assert ok == 200 and shown["state"] == "idle"
    (task,) = shown["tasks"]
    assert (task["task_id"], task["name"], task["state"]) == \
        (burning.id, "compute.diag.burn", "running")
    assert task["elapsed"] >= 0 and task["cpu_percent"] > 40  # a burn uses its core

    terminal = json.loads(volunteer(prefs, "status", "--json", "--sensor-dir",
                                    str(tmp_path / "no-sensor"), env=broker_env).stdout)
    assert terminal["container"] == "absent"  # the container part stays
    assert terminal["worker"]["state"] == "idle"
    assert terminal["worker"]["document"]["node"] == worker.node
    assert [t["task_id"] for t in terminal["worker"]["tasks"]] == [burning.id]
    table = volunteer(prefs, "status", "--sensor-dir", str(tmp_path / "no-sensor"),
                      env=broker_env).stdout
    assert f"native worker {worker.node}: owner idle" in table
    assert "compute.diag.burn" in table and "cpu_limit_percent" in table
    assert f"http://127.0.0.1:{port}/?token=" in table

    volunteer(prefs, "pause", env=broker_env)  # the file: works with or without a worker
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "busy", timeout=5,
             what="paused from the terminal")
    shown = wait_for(lambda: (s := json.loads(call(port, "GET", "/api/status", **auth)[1]))
                     ["tasks"] and s["tasks"][0]["state"] == "suspended" and s, timeout=5,
                     what="the burn suspended")
    assert [r["code"] for r in shown["reasons"]] == ["paused"]
    wait_for(lambda: json.loads(call(port, "GET", "/api/status", **auth)[1])["tasks"][0]
             ["cpu_percent"] < 5, timeout=5, every=0.3, what="no CPU while stopped")
    assert "# the test's preferences" in prefs.read_text()  # the volunteer's comments stay
    volunteer(prefs, "resume", env=broker_env)
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "idle", timeout=5,
             what="resumed from the terminal")

    assert burning.get(timeout=3 * TIMEOUT)
    credit = wait_for(lambda: json.loads(call(port, "GET", "/api/status", **auth)[1])
                      ["credit"]["total"]["tasks"] == 1 and
                      json.loads(call(port, "GET", "/api/status", **auth)[1])["credit"],
                      timeout=15, what="the burn's credit")
    assert credit["today"]["tasks"] == 1 and credit["total"]["cpu_seconds"] >= 3.5


def _reasons(browser) -> list[str]:
    return browser.evaluate("[...document.querySelectorAll('#owner-why li')]"
                            ".map(li => li.dataset.code)")


def test_the_page_in_chromium_snoozes_resumes_and_edits_a_preference(
        app, workers, broker, tmp_path):
    chromium = require("chromium")
    worker, prefs, port, token = start(workers, tmp_path, "control-b")
    wait_for(lambda: fleet(broker)[worker.node]["state"] == "idle", what="idle")
    url = f"http://127.0.0.1:{port}/"
    browser = Chromium(chromium, tmp_path / "chromium")
    try:
        browser.call("Page.navigate", url=f"{url}?token={token}")
        browser.wait(f"location.href === {json.dumps(url)} && "
                     "document.getElementById('owner-state').innerText === 'idle'")
        address = browser.evaluate("location.href")  # the token is gone from the URL
        node = browser.evaluate("document.getElementById('node').innerText")

        clicked = time.monotonic()
        browser.evaluate("document.getElementById('snooze-minutes').value = '5';"
                         "document.getElementById('snooze').click()")
        wait_for(lambda: fleet(broker)[worker.node]["consuming"] == [], timeout=5,
                 what="consuming stopped")
        stopped_after = time.monotonic() - clicked
        browser.wait("document.getElementById('owner-state').innerText === 'busy'", timeout=5)
        snoozed_reasons = _reasons(browser)
        sent = app.signature("compute.diag.noop").delay()
        time.sleep(1.5)
        pending = sent.state
        snooze_until = json.loads(call(port, "GET", "/api/status",
                                       **{control_page.HEADER: token})[1]
                                  )["preferences"]["snooze_until"]

        browser.evaluate("document.getElementById('resume').click()")
        browser.wait("document.getElementById('owner-state').innerText === 'idle'", timeout=5)
        taken = sent.get(timeout=TIMEOUT)

        browser.evaluate("""(() => {
            const input = document.querySelector('[name="usage.cpu_limit_percent"]');
            input.value = '50';
            document.getElementById('save').click(); })()""")
        browser.wait("document.getElementById('message').innerText === 'saved'", timeout=10)
        shown_limit = browser.wait("""(() => { const row = document.querySelector(
            '#prefs tr[data-key="cpu_limit_percent"]');
            return row && row.cells[1].innerText === '50' && row.cells[1].innerText; })()""",
                                   timeout=5)
        in_form = browser.evaluate(
            "document.querySelector('[name=\"usage.cpu_limit_percent\"]').value")
        reported = wait_for(lambda: fleet(broker)[worker.node]["preferences"]
                            ["cpu_limit_percent"] == 50, timeout=10, what="worker has 50 %")
        # ... and the worker obeys it: a burn runs half the time.
        burn = app.signature("compute.diag.burn", (30.0,)).delay()
        wait_for_state(burn, "STARTED")
        time.sleep(1.0)
        _, runnable = run_share(psutil.Process(worker.pid).children()[0], 4.0)
        burn.revoke(terminate=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "volunteer-control.png"
        browser.screenshot(shot)
    finally:
        browser.close()

    assert address == url and node == worker.node
    assert stopped_after <= 2.0, f"consuming stopped {stopped_after:.2f} s after the click"
    assert snoozed_reasons == ["snoozed"] and pending == "PENDING"
    assert 4 * 60 < snooze_until - time.time() <= 5 * 60
    assert taken["hostname"] == worker.node
    text = prefs.read_text()
    assert "cpu_limit_percent = 50" in text and "# the test's preferences" in text
    assert "snooze_until" not in text and "paused = false" in text
    assert shown_limit == "50" and in_form == "50" and reported
    assert 0.35 <= runnable <= 0.65, f"the burn ran {runnable:.0%} of the time at 50 %"
    assert shot.stat().st_size > 20_000
