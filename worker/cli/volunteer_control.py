"""``idle-accel volunteer status|pause|resume|snooze``: this machine's native worker, from its
control page (``worker/control_page.py``) and its preferences file.

``status`` asks the local worker's control page (the port in the preferences,
the token in the file beside them) and prints what the page shows; the
container's part stays. ``pause``, ``resume`` and ``snooze`` edit the
preferences file, so they work with or without a running worker: a running
one reloads the file within about a second.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from worker import control_page, preferences
from worker.cli.tables import folding_table


def preferences_path(given: Path | None = None) -> Path:
    """``--preferences``, else the worker's setting (IDLE_ACCEL_PREFERENCES), else the default."""
    if given is not None:
        return given.expanduser()
    try:
        from compute.settings import Settings
        from worker.idle.detector import preferences_file

        return preferences_file(Settings.load())
    except Exception:  # settings this command does not need may be incomplete
        return preferences.default_path()


def _base() -> preferences.Preferences | None:
    """The flags' and variables' preferences (IDLE_ACCEL_CONTROL_PORT, ...) the file overrides."""
    try:
        from compute.settings import Settings

        return preferences.defaults_from(Settings.load())
    except Exception:  # settings this command does not need may be incomplete
        return None


def page_status(path: Path, timeout: float = 5.0) -> tuple[dict[str, Any] | None, str, str]:
    """(the page's status or None, why not, the page's URL with its token or '')."""
    try:
        port = preferences.load(path, _base()).control_port
    except preferences.PreferencesError as exc:
        return None, f"preferences not readable: {exc}", ""
    if not port:
        return None, ("the control page is off (port 0: [control] port in "
                      f"{path}, or IDLE_ACCEL_CONTROL_PORT)"), ""
    token_file = control_page.token_path(path)
    token = control_page.read_token(token_file)
    if not token:
        return None, f"no native worker's control page here (no token in {token_file})", ""
    url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(f"{url}/api/status",  # noqa: S310 (http, loopback)
                                     headers={control_page.HEADER: token})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.load(response), "", f"{url}/?token={token}"
    except urllib.error.HTTPError as exc:
        return None, f"{url} answered {exc.code} (another program on that port?)", ""
    except (OSError, ValueError) as exc:
        return None, f"no worker answers on {url} ({getattr(exc, 'reason', exc)})", ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else \
        f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s"


def show(container: dict[str, Any], path: Path, as_json: bool) -> None:
    shown, why_not, url = page_status(path)
    if as_json:
        print(json.dumps({**container, "worker": shown, "worker_unreachable": why_not or None,
                          "preferences_file": str(path)}, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"container: {escape(str(container.get('container')))}; sensor PID: "
                  f"{container.get('sensor_pid') or '-'}")
    if shown is None:
        console.print(f"native worker: {escape(why_not)}")
        return
    doc = shown.get("document") or {}
    console.print(f"native worker [bold]{escape(str(doc.get('node')))}[/]: owner "
                  f"[bold]{escape(str(shown.get('state')))}[/]")
    for reason in shown.get("reasons") or []:
        console.print(f"  why: {escape(str(reason.get('message')))} "
                      f"({escape(str(reason.get('code')))})")
    console.print(f"control page: {escape(url)}")
    tasks = folding_table("task", "task id", "job", "state", "elapsed", "CPU", title="tasks")
    for task in shown.get("tasks") or []:
        cpu = task.get("cpu_percent")
        tasks.add_row(*map(escape, [str(task.get("name")), str(task.get("task_id")),
                                    str(task.get("job") or "-"), str(task.get("state")),
                                    _duration(task.get("elapsed")),
                                    "-" if cpu is None else f"{cpu} %"]))
    if not shown.get("tasks"):
        tasks.add_row("(none)", "", "", "", "", "")
    console.print(tasks)
    credit = shown.get("credit") or {}
    table = folding_table("credit", "tasks", "CPU time", "GPU time", title="credit")
    for label, key in (("today", "today"), ("in total", "total")):
        values = credit.get(key) or {}
        table.add_row(label, str(values.get("tasks", "-")),
                      _duration(values.get("cpu_seconds")), _duration(values.get("gpu_seconds")))
    console.print(table)
    for note in (shown.get("credit_note"), credit.get("error")):
        if note:
            console.print(f"  {escape(str(note))}")
    schedule = folding_table("day", "hours", title="schedule (time zone: "
                             f"{escape(str(shown.get('timezone') or 'this machine'))})")
    for day, windows in (shown.get("schedule") or {}).items():
        schedule.add_row(day, ", ".join(windows) or "no work")
    console.print(schedule)
    prefs = folding_table("preference", "value", title=f"preferences ({escape(str(path))})")
    for key, value in (shown.get("preferences") or {}).items():
        if key != "schedule":
            prefs.add_row(key, escape(json.dumps(value)))
    console.print(prefs)
    if shown.get("preferences_problem"):
        console.print(f"[bold red]preferences not applied:[/] "
                      f"{escape(str(shown['preferences_problem']))}")


def change(path: Path, changes: dict[str, dict[str, Any]]) -> preferences.Preferences:
    """Edit the file (a running worker reloads it within about a second)."""
    return preferences.update(path, changes)


def pause(path: Path) -> str:
    change(path, {"when": {"paused": True}})
    return f"paused until `idle-accel volunteer resume` ({path})"


def resume(path: Path) -> str:
    change(path, {"when": {"paused": False, "snooze_until": None}})
    return f"resumed: pause and snooze lifted ({path})"


def snooze(path: Path, minutes: float) -> str:
    until = round(time.time() + minutes * 60)
    change(path, {"when": {"snooze_until": until}})
    return f"snoozed until {dt.datetime.fromtimestamp(until):%a %H:%M} ({path})"
