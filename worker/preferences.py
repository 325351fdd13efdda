"""The volunteer's preferences: one TOML file per machine, validated, reloaded on change.

BOINC's computing preferences (``global_prefs_override.xml``) as a file a
person can read and edit; the worker, the host sensor and the local control
page read it. Every key is optional and every error is one line naming the
key. Runtime controls (pause, snooze) live in the same file, so what the
control page or ``idle-accel volunteer pause`` changes survives a restart.

    [when]
    idle_after = "3m"             # away this long before work (BOINC idle_time_to_run)
    paused = false                # pause until resumed
    snooze_until = 0              # epoch seconds: no work before then
    timezone = "Europe/Berlin"    # the schedule's zone (default: this machine's)
    cpu_while_present = 0         # % of the time CPU work may go on while you are here
    [when.schedule]               # hours per weekday; "every_day" for the days not named
    every_day = ["00:00-24:00"]
    mon = ["18:00-08:00"]

    [usage]
    max_cpus_percent = 100        # share of cores: the pool's processes follow
    cpu_limit_percent = 100       # run at most this % of the time (duty cycle)
    task_memory_mb = 0            # a task over it is ended and requeued (0: no cap)
    total_memory_mb = 0           # all tasks together (0: no cap)
    scratch_disk_gb = 0           # task scratch space (0: no cap)

    [gpu]
    while_present = false         # GPU work goes on while you are here (others' GPU use
                                  # still stops it)
    keep_tasks = false            # on your return, keep GPU tasks stopped in GPU memory
                                  # instead of ending and requeueing them

    [power]
    run_on_battery = false
    battery_floor = 20            # never below this charge, on AC or not

    [control]
    port = 7878                   # the local control page on 127.0.0.1 (0: off)
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.schedule import DAYS, Schedule, Window

log = logging.getLogger(__name__)

ENV = "IDLE_ACCEL_PREFERENCES"


class PreferencesError(ValueError):
    """A preferences file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Preferences:
    idle_after: float | None = None  # None: the worker's setting
    paused: bool = False
    snooze_until: float = 0.0
    schedule: Schedule = field(default_factory=Schedule.always)
    cpu_while_present: float = 0.0
    max_cpus_percent: float = 100.0
    cpu_limit_percent: float = 100.0
    task_memory_mb: int = 0
    total_memory_mb: int = 0
    scratch_disk_gb: float = 0.0
    gpu_while_present: bool = False
    keep_gpu_tasks: bool = False
    run_on_battery: bool | None = None  # None: the worker's setting
    battery_floor: float | None = None
    control_port: int = 7878

    def cores(self, total: int) -> int:
        """Pool processes for a machine of ``total`` cores: the share, at least one."""
        return max(1, math.floor(total * self.max_cpus_percent / 100 + 1e-9))

    def to_json(self) -> dict[str, Any]:
        return {
            "idle_after": self.idle_after, "paused": self.paused,
            "snooze_until": self.snooze_until, "schedule": self.schedule.describe(),
            "timezone": self.schedule.zone, "cpu_while_present": self.cpu_while_present,
            "max_cpus_percent": self.max_cpus_percent,
            "cpu_limit_percent": self.cpu_limit_percent,
            "task_memory_mb": self.task_memory_mb, "total_memory_mb": self.total_memory_mb,
            "scratch_disk_gb": self.scratch_disk_gb,
            "gpu_while_present": self.gpu_while_present, "keep_gpu_tasks": self.keep_gpu_tasks,
            "run_on_battery": self.run_on_battery, "battery_floor": self.battery_floor,
            "control_port": self.control_port,
        }


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_UNIT = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be seconds or a duration like \"3m\"")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"must be 0 or more seconds, got {value}")
        return float(value)
    found = _DURATION.match(str(value))
    if not found:
        raise ValueError(f"{value!r} is not a duration (e.g. 90, \"90s\", \"3m\", \"1h\")")
    return float(found.group(1)) * _UNIT[found.group(2)]


def _number(low: float, high: float, *, integer: bool = False) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                (integer and not isinstance(value, int)):
            raise ValueError(f"must be {'a whole number' if integer else 'a number'}, "
                             f"got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value:g}")
        return value
    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _zone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a known time zone (e.g. \"Europe/Berlin\")") \
            from None
    return str(value)


def _windows(value: Any) -> tuple[Window, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("must be a list of \"HH:MM-HH:MM\" windows")
    return tuple(Window.parse(str(item)) for item in items)


#: section -> key -> (field name, check)
_KEYS: dict[str, dict[str, tuple[str, Any]]] = {
    "when": {
        "idle_after": ("idle_after", _duration),
        "paused": ("paused", _bool),
        "snooze_until": ("snooze_until", _number(0, 1e11)),
        "timezone": ("timezone", _zone),
        "cpu_while_present": ("cpu_while_present", _number(0, 100)),
        "schedule": ("schedule", None),
    },
    "usage": {
        "max_cpus_percent": ("max_cpus_percent", _number(1, 100)),
        "cpu_limit_percent": ("cpu_limit_percent", _number(5, 100)),
        "task_memory_mb": ("task_memory_mb", _number(0, 1 << 24, integer=True)),
        "total_memory_mb": ("total_memory_mb", _number(0, 1 << 24, integer=True)),
        "scratch_disk_gb": ("scratch_disk_gb", _number(0, 1 << 20)),
    },
    "gpu": {
        "while_present": ("gpu_while_present", _bool),
        "keep_tasks": ("keep_gpu_tasks", _bool),
    },
    "power": {
        "run_on_battery": ("run_on_battery", _bool),
        "battery_floor": ("battery_floor", _number(0, 100)),
    },
    "control": {
        "port": ("control_port", _number(0, 65535, integer=True)),
    },
}


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def parse(data: dict[str, Any], *, source: str = "preferences",
          base: Preferences | None = None) -> Preferences:
    """Preferences from a parsed TOML document over ``base`` (the worker's flags and
    variables; default: the defaults); PreferencesError names the first problem."""
    base = base or Preferences()
    values: dict[str, Any] = {}
    timezone: str | None = base.schedule.zone
    days: list[tuple[Window, ...]] | None = None
    for section, body in data.items():
        if section not in _KEYS:
            raise PreferencesError(f"{source}: {_unknown(section, list(_KEYS))}")
        if not isinstance(body, dict):
            raise PreferencesError(f"{source}: [{section}] must be a table")
        for key, value in body.items():
            where = f"{source}: {section}.{key}"
            if key not in _KEYS[section]:
                raise PreferencesError(f"{source}: [{section}] "
                                       f"{_unknown(key, list(_KEYS[section]))}")
            name, check = _KEYS[section][key]
            try:
                if name == "schedule":
                    days = _schedule(value)
                elif name == "timezone":
                    timezone = check(value)
                else:
                    values[name] = check(value)
            except ValueError as exc:
                raise PreferencesError(f"{where}: {exc}") from None
    schedule = Schedule(tuple(days) if days is not None else base.schedule.days, timezone)
    return replace(base, schedule=schedule, **values)


def schedule_text(text: str) -> tuple[tuple[Window, ...], ...]:
    """A schedule on one line, as a flag or variable gives it:
    ``"every_day=18:00-08:00;sat=00:00-24:00;sun=00:00-24:00"`` (windows of one day
    separated by commas). ValueError names the problem."""
    table: dict[str, list[str]] = {}
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        day, _, windows = part.partition("=")
        if not windows:
            raise ValueError(f"{part!r} is not DAY=HH:MM-HH:MM[,HH:MM-HH:MM]")
        table[day.strip()] = [w.strip() for w in windows.split(",") if w.strip()]
    return tuple(_schedule(table))


def defaults_from(settings: Any) -> Preferences:
    """The worker's flags and variables (``compute.settings.Settings``) as the
    preferences a file starts from; what the file sets wins."""
    try:
        days = schedule_text(settings.schedule) if settings.schedule else \
            Schedule.always().days
    except ValueError as exc:
        raise PreferencesError(f"IDLE_ACCEL_SCHEDULE: {exc}") from None
    return Preferences(
        idle_after=None, schedule=Schedule(days, settings.timezone),
        cpu_while_present=settings.cpu_while_present,
        max_cpus_percent=settings.max_cpus_percent,
        cpu_limit_percent=settings.cpu_limit_percent,
        task_memory_mb=settings.task_memory_mb, total_memory_mb=settings.total_memory_mb,
        scratch_disk_gb=settings.scratch_disk_gb,
        gpu_while_present=settings.gpu_while_present, keep_gpu_tasks=settings.keep_gpu_tasks,
        control_port=settings.control_port)


def _schedule(value: Any) -> list[tuple[Window, ...]]:
    if not isinstance(value, dict):
        raise ValueError("must be a table of weekdays (mon..sun, every_day)")
    known = [*DAYS, "every_day"]
    for key in value:
        if key not in known:
            raise ValueError(_unknown(key, known))
    default = _windows(value["every_day"]) if "every_day" in value else ()
    return [_windows(value[day]) if day in value else default for day in DAYS]


def load(path: Path, base: Preferences | None = None) -> Preferences:
    """Read and validate ``path`` over ``base``; a missing file is ``base`` (the defaults)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return base or Preferences()
    except OSError as exc:
        raise PreferencesError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PreferencesError(f"{path}: not TOML: {exc}") from None
    return parse(data, source=str(path), base=base)


def default_path() -> Path:
    """``$IDLE_ACCEL_PREFERENCES``, else the per-user config folder's preferences.toml."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or (
        os.environ.get("APPDATA") if os.name == "nt" else None) or Path.home() / ".config"
    return Path(base) / "idle-accel" / "preferences.toml"


def update(path: Path, changes: dict[str, dict[str, Any]]) -> Preferences:
    """Set ``{section: {key: value}}`` in the file, keeping its comments and layout.

    ``section`` may be dotted (``"when.schedule"``); a value of None removes the key.

    The result is validated before it is written (a bad value changes
    nothing) and written atomically, readable by the owner only.
    """
    import tomlkit  # only the control page and the CLI write the file

    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    for section, keys in changes.items():
        table = document  # "when.schedule": a table inside a table
        for part in section.split("."):
            table = table.setdefault(part, tomlkit.table())
        for key, value in keys.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    text = tomlkit.dumps(document)
    parsed = parse(tomllib.loads(text), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    spare = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(spare, path)
    return parsed


def mirror(source: Path, target: Path, stamp: tuple[int, int] | None = None
           ) -> tuple[int, int] | None:
    """Copy ``source`` to ``target`` when it changed since ``stamp``; return the new stamp.

    The host sensor keeps a copy beside its sensor file, which a containerized
    worker reads (the folder is mounted read-only into the container): a
    container cannot follow an edited file through a bind mount of the file
    itself, since an edit replaces the file. The copy holds no secret and is
    readable by the container's user. A missing source removes the copy.
    """
    try:
        info = source.stat()
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        return None
    now = (info.st_mtime_ns, info.st_size)
    if now != stamp:
        spare = target.with_name(f".{target.name}.tmp")
        spare.write_bytes(source.read_bytes())
        spare.chmod(0o644)
        os.replace(spare, target)
    return now


class Watched:
    """The current preferences of one file, reloaded when the file changes.

    ``current()`` is cheap: one ``stat`` (at most every ``every`` seconds; by default
    on every call, so a tick woken by the file's edit sees it). A
    file that becomes invalid keeps the last good preferences and reports
    the error in ``problem`` (and the log, once), so a typo never turns a
    volunteer's limits off.
    """

    def __init__(self, path: Path | None, *, every: float = 0.0,
                 base: Preferences | None = None,
                 clock: Any = None) -> None:
        import time

        self.path = path
        self.every = every
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = -math.inf
        self.problem: str | None = None
        self.base = base or Preferences()
        self.prefs = self.base
        self.changed_at = 0.0
        if path is not None:
            self._reload(force=True)

    def _reload(self, *, force: bool = False) -> None:
        assert self.path is not None
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if not force and stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            prefs = load(self.path, self.base)
        except PreferencesError as exc:
            if str(exc) != self.problem:
                log.error("preferences not applied, keeping the last good ones: %s", exc)
            self.problem = str(exc)
            return
        if prefs != self.prefs:
            log.info("preferences %s: %s", "loaded" if force else "changed", self.path)
        self.prefs, self.problem = prefs, None
        self.changed_at = self._clock()

    def current(self) -> Preferences:
        if self.path is None:
            return self.prefs
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.every:
                self._checked = now
                self._reload()
            return self.prefs

    def reload_now(self) -> Preferences:
        with self._lock:
            self._checked = self._clock()
            if self.path is not None:
                self._reload()
            return self.prefs
