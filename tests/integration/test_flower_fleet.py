"""Flower's Fleet page (``idle-accel flower``), in a real Flower, on real workers, in Chromium.

Owner state and why, mode, region, queues, hardware, tasks, credit, the
capacity plot and the emergency switch, behind Flower's login; a hostile
worker's report shows as text.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from compute import keys
from worker import fleet_mode
from worker.status import read_fleet

from .chromium import Chromium
from .gating import Owner
from .tools import require
from .waiting import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _reports(broker, nodes, **wanted):
    with broker.client() as client:
        found = {doc["node"]: doc for doc in read_fleet(client)}
    return all(node in found and all(found[node].get(k) == v for k, v in wanted.items())
               for node in nodes) and found


def _click_switch(browser, broker, nodes, switch: str, mode: str):
    """Click the page's switch ``on`` or ``off``; the reports once every node shows ``mode``."""
    browser.evaluate(f"document.getElementById('emergency-{switch}').click()")
    browser.wait(f"location.search.includes('switched={switch}') && "
                 "document.readyState === 'complete'")
    return wait_for(lambda: _reports(broker, nodes, fleet_mode=mode), timeout=30,
                    what=f"every worker in {mode} mode")


def test_the_fleet_page_and_its_switch_need_flowers_login(flower, broker):
    page, _ = flower.get("/fleet", auth=False)
    api, _ = flower.get("/api/fleet", auth=False)
    switch, _ = flower.post("/fleet/emergency", {"switch": "on"}, auth=False)
    # Logged in, but sent from another site (a page the admin visits posting to Flower).
    cross_site, _ = flower.post("/fleet/emergency", {"switch": "on"},
                                headers={"Sec-Fetch-Site": "cross-site"})
    bad, _ = flower.post("/fleet/emergency", {"switch": "maybe"})
    switched, _ = flower.post("/fleet/emergency", {"switch": "on"})
    with broker.client() as client:
        on = fleet_mode.read(client).emergency
    flower.post("/fleet/emergency", {"switch": "off"})

    with broker.client() as client:
        off = client.get(keys.FLEET_MODE) is None
    assert (page, api, switch, cross_site, bad) == (401, 401, 401, 403, 400)
    assert switched == 302 and on and off  # the same post, logged in from Flower's own page


def test_the_fleet_page_shows_owners_credit_and_capacity_and_switches_the_fleet(
        app, workers, flower, broker, tmp_path):
    chromium = require("chromium")
    away = workers("away", "--concurrency", "1")
    owner = Owner(tmp_path / "busy.owner")  # busy
    busy = workers("busy", "--sensor", owner.flag, "--sensor-max-age", "0", "--region", "eu",
                   "--concurrency", "1", ready=False)
    app.signature("compute.diag.noop").delay().get(timeout=30)  # credit for "away"
    wait_for(lambda: _reports(broker, [away.node, busy.node]), timeout=30,
             what="both workers' status reports")
    wait_for(lambda: flower.get("/api/fleet")[1] and json.loads(flower.get("/api/fleet")[1])
             ["history"], timeout=30, what="a capacity sample")

    cores = os.cpu_count()  # each worker reports its machine's cores
    browser = Chromium(chromium, tmp_path / "chromium")
    try:
        browser.basic_auth(flower.user, flower.password)
        browser.open(flower.url + "/fleet")
        cells = browser.evaluate("""Object.fromEntries([...document.querySelectorAll(
            '#fleet-workers tbody tr')].map(r => [r.dataset.node,
            [...r.cells].map(c => c.innerText)]))""")
        mode_before = browser.evaluate("document.getElementById('fleet-mode').innerText")
        plot = browser.evaluate("""['capacity-total', 'capacity-consuming'].map(
            id => document.getElementById(id).getAttribute('points'))""")
        now = browser.evaluate("document.getElementById('capacity-now').innerText")
        nav = browser.evaluate("document.getElementById('nav-fleet').innerText")

        emergency = _click_switch(browser, broker, [away.node, busy.node], "on", "emergency")
        browser.open(flower.url + "/fleet")
        mode_after = browser.evaluate("document.getElementById('fleet-mode').innerText")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "flower-fleet.png"
        browser.screenshot(shot)

        normal = _click_switch(browser, broker, [away.node, busy.node], "off", "normal")
    finally:
        browser.close()

    assert nav == "Fleet"  # a tab in Flower's own navigation bar
    # columns: worker, owner, why, mode, region, queues, hardware, running, suspended, credit
    assert cells[away.node][1:5] == ["idle", "-", "volunteer", "-"]
    assert "cpu" in cells[away.node][5] and " cores, " in cells[away.node][6]
    assert cells[away.node][9].startswith("1 task, ")
    assert cells[busy.node][1:5] == ["busy", "host sensor says busy", "volunteer", "eu"]
    assert cells[busy.node][5] == "(none)" and cells[busy.node][9] == "-"
    assert mode_before == "normal: 2 of 2 workers"
    # Both report this machine's cores, one takes work: at "now" (the right edge) the total
    # line is at the top of the plot, the consuming one half way (the plot is 200 high).
    total_now, consuming_now = (line.split()[-1].split(",") for line in plot)
    assert now.startswith(f"Now: {cores} of {2 * cores} cores taking work (1 of 2 workers")
    assert float(total_now[0]) == float(consuming_now[0]) == 720.0
    assert float(total_now[1]) == 0.0 and float(consuming_now[1]) == 100.0
    assert emergency and normal
    assert mode_after.startswith("EMERGENCY: ")
    assert shot.stat().st_size > 20_000
    with broker.client() as client:
        assert client.get(keys.FLEET_MODE) is None  # switched off again
    assert flower.password not in flower.log_text()


def test_a_hostile_report_shows_as_text_and_a_malformed_one_breaks_nothing(flower, broker):
    hostile = {"node": "<script>document.title='pwned'</script>@evil", "at": time.time(),
               "state": "idle", "mode": "idle", "region": "<b>eu</b>",
               "reasons": [{"code": "x", "message": "<img src=x onerror=alert(1)>"}],
               "consuming": ["cpu"], "hardware": {"cores": 4, "ram_bytes": 0, "gpus": []}}
    malformed = {"node": "odd@h", "at": "yesterday", "state": 7, "reasons": "many",
                 "consuming": 5, "hardware": "lots", "running": None}
    with broker.client() as client:
        client.set(keys.worker(hostile["node"]), json.dumps(hostile), ex=60)
        client.set(keys.worker("odd@h"), json.dumps(malformed), ex=60)

    status, body = flower.get("/fleet")
    text = body.decode()

    assert status == 200
    assert "<script>document.title" not in text and "<img src=x" not in text
    assert "&lt;script&gt;document.title" in text and "&lt;img src=x onerror" in text
    assert "odd@h" in text and ">lots<" not in text  # the malformed hardware shows as "?"
