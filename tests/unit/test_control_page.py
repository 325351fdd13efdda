"""The control page's checks (token, Host, Origin), its token file, and its API on a fake loop."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from worker import control_page as cp
from worker.gate import Held
from worker.preferences import Watched

PORT = 7878
TOKEN = "s3cret-token"


@pytest.mark.parametrize("host, ok", [
    (f"127.0.0.1:{PORT}", True), (f"localhost:{PORT}", True), (f"LOCALHOST:{PORT}", True),
    ("127.0.0.1", False), (f"127.0.0.1:{PORT + 1}", False), (f"evil.example:{PORT}", False),
    (f"127.0.0.1.nip.io:{PORT}", False), ("", False), (None, False),
])
def test_only_this_servers_own_host_names_pass(host, ok):
    assert cp.host_ok(host, PORT) is ok


@pytest.mark.parametrize("origin, ok", [
    (f"http://127.0.0.1:{PORT}", True), (f"http://localhost:{PORT}", True),
    (f"https://127.0.0.1:{PORT}", False), (f"http://127.0.0.1:{PORT + 1}", False),
    ("http://evil.example", False), ("null", False), ("", False), (None, False),
    (f"http://evil.example@127.0.0.1:{PORT}", False),
])
def test_only_this_page_is_a_good_origin(origin, ok):
    assert cp.origin_ok(origin, PORT) is ok


def test_the_token_compares_in_full():
    assert cp.token_ok(TOKEN, TOKEN)
    assert not cp.token_ok(TOKEN[:-1], TOKEN) and not cp.token_ok("", TOKEN)
    assert not cp.token_ok(None, TOKEN) and not cp.token_ok("x", "")
    assert cp.cookie_token(f"a=1; {cp.COOKIE}={TOKEN}") == TOKEN
    assert cp.cookie_token("a=1") is None and cp.cookie_token(None) is None


def test_authorize_wants_the_host_then_the_token_then_the_origin_for_a_post():
    ok = {"Host": f"127.0.0.1:{PORT}", cp.HEADER: TOKEN}
    cookie = {"Host": f"localhost:{PORT}", "Cookie": f"{cp.COOKIE}={TOKEN}"}
    page_origin = f"http://localhost:{PORT}"
    assert cp.authorize("GET", ok, TOKEN, PORT) is None
    assert cp.authorize("GET", cookie, TOKEN, PORT) is None
    assert cp.authorize("GET", {**ok, "Host": "rebound.example"}, TOKEN, PORT)[0] == 421
    assert cp.authorize("GET", {"Host": ok["Host"]}, TOKEN, PORT)[0] == 401
    assert cp.authorize("GET", {**ok, cp.HEADER: "guess"}, TOKEN, PORT)[0] == 401
    # POST: the page itself (cookie and its own Origin), or a client with the header token
    assert cp.authorize("POST", {**cookie, "Origin": page_origin}, TOKEN, PORT) is None
    assert cp.authorize("POST", ok, TOKEN, PORT) is None
    assert cp.authorize("POST", {**cookie, "Origin": "http://evil.example"}, TOKEN, PORT)[0] \
        == 403
    assert cp.authorize("POST", {**ok, "Origin": "http://evil.example"}, TOKEN, PORT)[0] == 403
    assert cp.authorize("POST", cookie, TOKEN, PORT)[0] == 403  # a cookie alone, no Origin


def test_the_token_file_is_the_owners_alone_and_new_each_time(tmp_path):
    path = cp.token_path(tmp_path / "cfg" / "preferences.toml")
    first = cp.write_token(path)
    second = cp.write_token(path)
    assert path == tmp_path / "cfg" / "control-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first != second and len(second) >= 40 and cp.read_token(path) == second
    path.chmod(0o644)  # readable by other users: not trusted
    assert cp.read_token(path) is None
    assert cp.read_token(tmp_path / "missing") is None


def test_credit_today_is_the_total_less_the_days_first_sample(tmp_path):
    totals = iter([{b"tasks": b"3", b"cpu_seconds": b"10.5", b"gpu_seconds": b"0"},
                   {"tasks": "5", "cpu_seconds": "12.5"}])
    day = cp.CreditDay(lambda: next(totals), tmp_path / "day.json")
    first, second = day.sample(), day.sample()
    assert first["today"] == {"tasks": 0, "cpu_seconds": 0.0, "gpu_seconds": 0.0}
    assert second["total"] == {"tasks": 5, "cpu_seconds": 12.5, "gpu_seconds": 0.0}
    assert second["today"] == {"tasks": 2, "cpu_seconds": 2.0, "gpu_seconds": 0.0}
    stored = json.loads((tmp_path / "day.json").read_text())
    stored["day"] = "2000-01-01"  # yesterday's sample: today starts again
    (tmp_path / "day.json").write_text(json.dumps(stored))
    day.read = lambda: {"tasks": "6", "cpu_seconds": "13"}
    assert day.sample()["today"]["tasks"] == 0
    day.read = lambda: 1 / 0
    assert day.sample()["error"].startswith("credit not read")


# -- the page on a fake owner loop --------------------------------------------------------

class FakeActuator:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def held(self):
        return [Held("t-1", "compute.diag.burn", self.pid, "1", "cpu", started=time.time() - 5,
                     job="job-9"),
                Held("t-2", "compute.diag.noop", None, "2", "cpu")]


class FakeGate:
    def __init__(self) -> None:
        self.actuator = FakeActuator(os.getpid())
        self.stopped: list[int] = []


class FakeOwner:
    def __init__(self) -> None:
        self.gate = FakeGate()
        self.nudged = 0

    def nudge(self) -> None:
        self.nudged += 1  # a change applies at once, not at the loop's next tick

    def document(self):
        return {"node": "w@h", "state": "busy", "volunteer": None,
                "reasons": [{"code": "input", "message": "keyboard or mouse used"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page(tmp_path):
    prefs = tmp_path / "preferences.toml"
    prefs.write_text("# mine\n[usage]\ncpu_limit_percent = 80  # keep this comment\n")
    page = cp.ControlPage(FakeOwner(), Watched(prefs), free_port(),
                          credit=lambda: {"tasks": "2", "cpu_seconds": "7"})
    assert page.start()
    yield page
    page.stop()


def call(page, method, path, body=None, **given):
    connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    sent = {"Host": f"127.0.0.1:{page.port}", cp.HEADER: page.token,
            "Content-Type": "application/json"}
    sent.update({k.replace("_", "-"): v for k, v in given.items()})
    sent = {k: v for k, v in sent.items() if v is not None}
    connection.request(method, path, body=json.dumps(body).encode() if body is not None
                       else None, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), data


def test_the_page_shows_state_tasks_credit_and_preferences(page):
    status, _, data = call(page, "GET", "/api/status")
    shown = json.loads(data)
    assert status == 200
    assert shown["state"] == "busy" and shown["reasons"][0]["code"] == "input"
    running, waiting = shown["tasks"]
    assert (running["task_id"], running["job"], running["state"]) == ("t-1", "job-9", "running")
    assert 4 <= running["elapsed"] < 60 and running["cpu_percent"] >= 0
    assert waiting["state"] == "waiting" and waiting["elapsed"] is None
    assert shown["credit"]["total"] == {"tasks": 2, "cpu_seconds": 7.0, "gpu_seconds": 0.0}
    assert shown["preferences"]["cpu_limit_percent"] == 80
    assert shown["schedule"]["mon"] == ["00:00-24:00"]


def test_the_page_refuses_strangers(page):
    assert call(page, "GET", "/api/status", **{cp.HEADER: None})[0] == 401
    assert call(page, "GET", "/", **{cp.HEADER: None})[0] == 401
    assert call(page, "GET", "/api/status", Host=f"evil.example:{page.port}")[0] == 421
    assert call(page, "POST", "/api/pause", {}, Origin="http://evil.example")[0] == 403
    assert call(page, "GET", "/?token=wrong")[0] == 401
    assert "paused" not in page.watched.path.read_text()


def test_the_token_link_sets_a_cookie_and_drops_the_token_from_the_url(page):
    status, sent, _ = call(page, "GET", f"/?token={page.token}", **{cp.HEADER: None})
    cookie = sent["Set-Cookie"]
    assert status == 303 and sent["Location"] == "/"
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = cookie.split(";")[0]
    status, _, body = call(page, "GET", "/", Cookie=value, **{cp.HEADER: None})
    assert status == 200 and b"owner-state" in body
    origin = f"http://127.0.0.1:{page.port}"
    assert call(page, "POST", "/api/pause", {}, Cookie=value, Origin=origin,
                **{cp.HEADER: None})[0] == 200


def test_controls_write_the_file_keeping_its_comments(page):
    assert call(page, "POST", "/api/pause", {})[0] == 200
    assert page.watched.prefs.paused
    status, _, data = call(page, "POST", "/api/snooze", {"minutes": 30})
    assert status == 200 and abs(json.loads(data)["status"]["preferences"]["snooze_until"]
                                 - (time.time() + 1800)) < 5
    assert call(page, "POST", "/api/resume", {})[0] == 200
    assert not page.watched.prefs.paused and page.watched.prefs.snooze_until == 0
    status, _, data = call(page, "POST", "/api/preferences",
                           {"usage": {"cpu_limit_percent": 50},
                            "when.schedule": {"every_day": ["18:00-08:00"]}})
    assert status == 200 and page.watched.prefs.cpu_limit_percent == 50
    text = page.watched.path.read_text()
    assert "# keep this comment" in text and "# mine" in text
    assert stat.S_IMODE(page.watched.path.stat().st_mode) == 0o600
    assert json.loads(data)["status"]["schedule"]["sun"] == ["18:00-08:00"]
    assert page.owner.nudged == 4  # each change applied at once, not at the next tick


@pytest.mark.parametrize("action, body, why", [
    ("snooze", {"minutes": 0}, "minutes"),
    ("snooze", {"minutes": "5"}, "minutes"),
    ("preferences", {"usage": {"cpu_limit_percent": 1}}, "between 5 and 100"),
    ("preferences", {"control": {"port": 80}}, "cannot be changed here"),
    ("preferences", {"usage": 5}, "must be an object"),
])
def test_bad_changes_change_nothing(page, action, body, why):
    before = page.watched.path.read_text()
    status, _, data = call(page, "POST", f"/api/{action}", body)
    assert status == 400 and why in json.loads(data)["error"]
    assert page.watched.path.read_text() == before


def test_a_port_in_use_is_a_warning_not_a_crash(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        page = cp.ControlPage(FakeOwner(), Watched(tmp_path / "p.toml"),
                              taken.getsockname()[1])
        assert not page.start()
    page.stop()
    assert "control page not started" in caplog.text
    assert not Path(tmp_path / "control-token").exists()


# -- the terminal's side ------------------------------------------------------------------

def test_pause_snooze_and_resume_edit_the_file_without_a_worker(tmp_path):
    from worker.cli import volunteer_control as vc

    prefs = tmp_path / "preferences.toml"
    prefs.write_text("# mine\n[control]\nport = 0\n")
    assert "paused until" in vc.pause(prefs)
    assert "snoozed until" in vc.snooze(prefs, 10)
    loaded = Watched(prefs).prefs
    assert loaded.paused and 590 <= loaded.snooze_until - time.time() <= 601
    vc.resume(prefs)
    loaded = Watched(prefs).prefs
    assert not loaded.paused and loaded.snooze_until == 0 and "# mine" in prefs.read_text()
    assert vc.page_status(prefs)[1].startswith("the control page is off")


def test_status_says_why_no_worker_answers(page, tmp_path):
    from worker.cli import volunteer_control as vc

    lone = tmp_path / "lone" / "preferences.toml"
    lone.parent.mkdir()
    lone.write_text(f"[control]\nport = {free_port()}\n")
    assert "no token in" in vc.page_status(lone)[1]
    cp.write_token(cp.token_path(lone))
    assert "no worker answers" in vc.page_status(lone)[1]
    page.watched.path.write_text(f"[control]\nport = {page.port}\n")
    shown, why, url = vc.page_status(page.watched.path)
    assert shown["state"] == "busy" and not why and url.endswith(f"?token={page.token}")
