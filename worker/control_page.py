"""The volunteer's local control page: served by the worker on 127.0.0.1 only.

What the worker does now and why (owner state, reasons, running and suspended
tasks with their CPU, credit today and in total, the schedule, the
preferences and any error in them), and the volunteer's controls: pause,
resume, snooze, and a small form for the main preferences. Every control
writes the preferences file (``worker.preferences.update``) and reloads it
at once, so the page, ``idle-accel volunteer pause`` and a text editor all
change the same thing, and it survives a restart.

Who may use it: whoever can read the token file (``control-token`` next to
the preferences file, mode 0600, a fresh token each time the page starts), so
other local users cannot. A browser hands the token once in the URL
(``/?token=...``): the page sets it as an HttpOnly, SameSite=Strict cookie and
redirects to drop it from the address bar; other clients send the
``X-Idle-Accel-Token`` header. Against DNS rebinding any Host but
``127.0.0.1:PORT`` / ``localhost:PORT`` is refused (421), and a POST must come
from the page itself (its ``Origin``) or, without an Origin, carry the header
token (a browser on another site can neither set that header without a
preflight this server never answers, nor read the cookie).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import http.cookies
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil

from worker import preferences, taskprocs

log = logging.getLogger(__name__)

TOKEN_FILE = "control-token"  # noqa: S105 (a file name)
CREDIT_DAY_FILE = "control-credit-day.json"
HEADER = "X-Idle-Accel-Token"
COOKIE = "idle_accel_control"
TEMPLATE = Path(__file__).resolve().parent / "templates" / "control.html"
#: The preferences the page's form edits: (section, key).
EDITABLE = {
    ("usage", "cpu_limit_percent"), ("usage", "max_cpus_percent"), ("usage", "task_memory_mb"),
    ("when", "idle_after"), ("when", "cpu_while_present"), ("when.schedule", "every_day"),
    ("gpu", "while_present"), ("gpu", "keep_tasks"),
}
MAX_BODY = 64 * 1024
CREDIT_EVERY = 60.0  # seconds between credit samples while nobody looks (for "today")
CREDIT_FRESH = 5.0  # the page shows credit at most this old


# -- the token ---------------------------------------------------------------------------

def token_path(preferences_file: Path) -> Path:
    """The token file of the control page of the worker using ``preferences_file``."""
    return preferences_file.parent / TOKEN_FILE


def write_token(path: Path) -> str:
    """A fresh random token in ``path``, readable by its owner only (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    spare = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        spare.unlink()
    descriptor = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(token + "\n")
    os.replace(spare, path)
    return token


def read_token(path: Path) -> str | None:
    """The token in ``path``; None when missing, or readable by others than its owner."""
    try:
        info = path.stat()
        if os.name != "nt" and (info.st_mode & 0o077 or info.st_uid != os.getuid()):
            log.warning("%s is readable by others: not used", path)
            return None
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


# -- the checks (pure) -------------------------------------------------------------------

def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})


def host_ok(host: str | None, port: int) -> bool:
    """The Host header names this server (not a name rebound to 127.0.0.1)."""
    return bool(host) and host.strip().lower() in allowed_hosts(port)  # type: ignore[union-attr]


def origin_ok(origin: str | None, port: int) -> bool:
    """The Origin of a POST is this page (``http://127.0.0.1:PORT`` or ``localhost``)."""
    if not origin:
        return False
    parts = urlsplit(origin.strip().lower())
    return parts.scheme == "http" and parts.netloc in allowed_hosts(port) and \
        parts.path in ("", "/")


def token_ok(given: str | None, token: str) -> bool:
    return bool(given) and bool(token) and hmac.compare_digest(
        given.encode("utf-8", "replace"), token.encode())  # type: ignore[union-attr]


def cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    try:
        jar.load(header)
    except http.cookies.CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def authorize(method: str, headers: Any, token: str, port: int) -> tuple[int, str] | None:
    """None when the request may go on, else (HTTP status, why). ``headers``: a mapping."""
    if not host_ok(headers.get("Host"), port):
        return HTTPStatus.MISDIRECTED_REQUEST, "this page answers only 127.0.0.1 and localhost"
    by_header = token_ok(headers.get(HEADER), token)
    by_cookie = token_ok(cookie_token(headers.get("Cookie")), token)
    if not (by_header or by_cookie):
        return HTTPStatus.UNAUTHORIZED, ("no valid token: open the link that "
                                         "`idle-accel volunteer status` prints")
    if method == "POST":
        origin = headers.get("Origin")
        if origin is not None and not origin_ok(origin, port):
            return HTTPStatus.FORBIDDEN, "cross-origin request refused"
        if origin is None and not by_header:
            return HTTPStatus.FORBIDDEN, "a POST without Origin needs the token header"
    return None


# -- what the page shows ------------------------------------------------------------------

class CpuMeter:
    """CPU % of a process tree now: since the last reading when it is recent (the page asks
    every second), else over 0.2 s measured on the spot."""

    window = 2.0  # a reading older than this is not a baseline: measure anew
    least = 0.5  # readings closer than this show the last figure

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}
        self._shown: dict[int, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _cpu(root: int) -> float:
        total = 0.0
        for pid in taskprocs.tree([root]):
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def percent(self, roots: list[int]) -> dict[int, float]:
        with self._lock:
            stale = time.monotonic() - self.window
            fresh = [root for root in roots if self._last.get(root, (-math.inf,))[0] < stale]
            if fresh:
                for root in fresh:
                    self._last[root] = (time.monotonic(), self._cpu(root))
                time.sleep(0.2)
            found = {}
            for root in roots:
                then, before = self._last[root]
                if root in self._shown and time.monotonic() - then < self.least:
                    found[root] = self._shown[root]  # too short to measure (10 ms ticks)
                    continue
                now, cpu = time.monotonic(), self._cpu(root)
                found[root] = round(max(0.0, cpu - before) / max(now - then, 1e-3) * 100, 1)
                self._last[root], self._shown[root] = (now, cpu), found[root]
            for gone in set(self._last) - set(roots):
                del self._last[gone]
                self._shown.pop(gone, None)
            return found


def _numbers(raw: dict[Any, Any]) -> dict[str, float]:
    values = {(k.decode() if isinstance(k, bytes) else str(k)):
              (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
    return {"tasks": int(float(values.get("tasks", 0) or 0)),
            "cpu_seconds": round(float(values.get("cpu_seconds", 0) or 0), 3),
            "gpu_seconds": round(float(values.get("gpu_seconds", 0) or 0), 3)}


class CreditDay:
    """Credit earned today: the stored total less the first total seen today.

    Redis keeps only totals (``worker/credit.py``); the day's first sample is
    kept in a small file beside the token, so "today" survives a restart. It
    counts from the first sample of the day: the page samples once a minute
    while the worker runs, so what a worker earns while stopped over midnight
    is counted on the day it restarts.
    """

    def __init__(self, read: Callable[[], dict[Any, Any]], path: Path) -> None:
        self.read = read
        self.path = path
        self.sampled_at = -float("inf")
        self.last: dict[str, Any] = {"total": None, "today": None, "error": None}
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        with self._lock:  # the server's loop and page requests
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        self.sampled_at = time.monotonic()
        try:
            total = _numbers(self.read())
        except Exception as exc:  # the broker may be restarting: show the last figures
            self.last = {**self.last, "error": f"credit not read: {exc}"}
            return self.last
        day = dt.date.today().isoformat()
        base: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            base = json.loads(self.path.read_text())
        if base.get("day") != day or any(total[k] < base.get(k, 0) for k in total):
            base = {"day": day, **total}
            with contextlib.suppress(OSError):
                self.path.write_text(json.dumps(base))
        today = {k: round(total[k] - base.get(k, 0), 3) for k in total}
        today["tasks"] = int(today["tasks"])
        self.last = {"total": total, "today": today, "since": base["day"], "error": None}
        return self.last


def task_rows(gate: Any, cpu: CpuMeter) -> list[dict[str, Any]]:
    """The tasks the worker holds: running, suspended (stopped) or waiting to start."""
    held = gate.actuator.held()
    stopped = set(gate.stopped)
    pids = [h.worker_pid for h in held if h.worker_pid]
    usage = cpu.percent(pids) if pids else {}
    now = time.time()
    rows = []
    for h in held:
        state = "waiting" if not h.worker_pid or not h.started else \
            "suspended" if h.worker_pid in stopped else "running"
        rows.append({"task_id": h.task_id, "name": h.name, "job": h.job, "queue": h.queue,
                     "state": state, "pid": h.worker_pid,
                     "elapsed": round(now - h.started, 1) if h.started else None,
                     "cpu_percent": usage.get(h.worker_pid) if h.worker_pid else None})
    return rows


# -- the server ---------------------------------------------------------------------------

class ControlPage:
    """The page of one worker's owner loop; ``start``/``stop`` with the loop."""

    def __init__(self, owner: Any, watched: preferences.Watched, port: int, *,
                 credit: Callable[[], dict[Any, Any]] | None = None) -> None:
        assert watched.path is not None
        self.owner = owner
        self.watched = watched
        self.port = port
        self.token_file = token_path(watched.path)
        self.token = ""
        self.credit = CreditDay(credit, watched.path.parent / CREDIT_DAY_FILE) \
            if credit else None
        self.cpu = CpuMeter()
        self.server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> bool:
        """Serve on 127.0.0.1:port; False (and a warning) when the port cannot be had."""
        if not self.port:
            return False
        page = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = False  # two workers must not share the port

            def service_actions(self) -> None:
                if page.credit and time.monotonic() - page.credit.sampled_at >= CREDIT_EVERY:
                    page.credit.sample()

        try:
            self.server = Server(("127.0.0.1", self.port), _handler(self))
        except OSError as exc:
            log.warning("control page not started: 127.0.0.1:%d: %s (set [control] port in "
                        "%s; 0 turns it off)", self.port, exc.strerror or exc,
                        self.watched.path)
            self.server = None
            return False
        try:
            self.token = write_token(self.token_file)
        except OSError as exc:
            log.warning("control page not started: token file %s: %s", self.token_file, exc)
            self.server.server_close()
            self.server = None
            return False
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="idle-accel-control", daemon=True)
        self._thread.start()
        log.info("control page on %s (token in %s)", self.url, self.token_file)
        return True

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.token_file.unlink(missing_ok=True)  # the token dies with the page

    # -- what it shows and does

    def status(self) -> dict[str, Any]:
        document = self.owner.document()
        prefs = self.watched.current()
        if self.credit is not None and \
                time.monotonic() - self.credit.sampled_at >= CREDIT_FRESH:
            self.credit.sample()
        return {
            "document": document,
            "state": document.get("state"),
            "reasons": document.get("reasons", []),
            "tasks": task_rows(self.owner.gate, self.cpu),
            "credit": self.credit.last if self.credit else None,
            "credit_note": ("claimed by this worker; the coordinator grants what counts"
                            if document.get("volunteer") else None),
            "schedule": prefs.schedule.describe(),
            "timezone": prefs.schedule.zone,
            "preferences": prefs.to_json(),
            "preferences_file": str(self.watched.path),
            "preferences_problem": self.watched.problem,
            "now": round(time.time(), 3),
        }

    def change(self, changes: dict[str, dict[str, Any]]) -> preferences.Preferences:
        """Write ``changes`` to the preferences file and apply them at once."""
        preferences.update(self.watched.path, changes)  # type: ignore[arg-type]
        prefs = self.watched.reload_now()
        self.owner.nudge()  # applied now: a snooze stops consuming at once
        return prefs

    def act(self, action: str, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The preference changes a POST to ``/api/<action>`` asks for (ValueError: bad)."""
        if action == "pause":
            return {"when": {"paused": True}}
        if action == "resume":
            return {"when": {"paused": False, "snooze_until": None}}
        if action == "snooze":
            minutes = body.get("minutes")
            if isinstance(minutes, bool) or not isinstance(minutes, int | float) or \
                    not 0 < minutes <= 7 * 24 * 60:
                raise ValueError("minutes: a number from 1 to 10080")
            return {"when": {"snooze_until": round(time.time() + minutes * 60)}}
        if action == "preferences":
            changes: dict[str, dict[str, Any]] = {}
            for section, keys in body.items():
                if not isinstance(keys, dict):
                    raise ValueError(f"{section}: must be an object of keys")
                for key, value in keys.items():
                    if (section, key) not in EDITABLE:
                        raise ValueError(f"{section}.{key} cannot be changed here")
                    changes.setdefault(section, {})[key] = value
            return changes
        raise LookupError(action)


def _handler(page: ControlPage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "idle-accel-control"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control page: " + format, *args)

        def _send(self, status: int, body: bytes, kind: str,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; "
                             "frame-ancestors 'none'; form-action 'none'")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _refuse(self, refused: tuple[int, str]) -> None:
            status, why = refused
            if self.path.startswith("/api/"):
                self._json(status, {"error": why})
            else:
                self._send(status, f"<!doctype html><title>idle-accel</title><p>{why}</p>"
                           .encode(), "text/html; charset=utf-8")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [None])[0]
            if url.path == "/" and given is not None:
                if not host_ok(self.headers.get("Host"), page.port):
                    return self._refuse((HTTPStatus.MISDIRECTED_REQUEST, "wrong host"))
                if not token_ok(given, page.token):
                    return self._refuse((HTTPStatus.UNAUTHORIZED, "wrong token"))
                cookie = f"{COOKIE}={page.token}; Path=/; HttpOnly; SameSite=Strict"
                return self._send(HTTPStatus.SEE_OTHER, b"", "text/plain",
                                  {"Set-Cookie": cookie, "Location": "/"})
            refused = authorize("GET", self.headers, page.token, page.port)
            if refused:
                return self._refuse(refused)
            if url.path == "/":
                return self._send(HTTPStatus.OK, TEMPLATE.read_bytes(),
                                  "text/html; charset=utf-8")
            if url.path == "/api/status":
                return self._json(HTTPStatus.OK, page.status())
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            refused = authorize("POST", self.headers, page.token, page.port)
            if refused:
                return self._refuse(refused)
            url = urlsplit(self.path)
            if not url.path.startswith("/api/"):
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                changes = page.act(url.path[len("/api/"):], body)
                page.change(changes)
            except LookupError:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            except (ValueError, preferences.PreferencesError) as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            log.info("control page: %s %s", url.path, json.dumps(changes))
            return self._json(HTTPStatus.OK, {"ok": True, "status": page.status()})

        do_HEAD = do_GET

    return Handler
