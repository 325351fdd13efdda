"""Install the volunteer worker natively, as a per-user service that starts at login.

For volunteers without Docker (``idle-accel volunteer install|uninstall``):
``idle-accel worker --mode volunteer`` (its owner detector runs in-process)
registered as a systemd user unit (Linux), a launchd agent (macOS) or a Task
Scheduler task started at logon with least privilege (Windows). The broker
URL never sits in the unit: it goes into a file only the owner can read,
which the unit names through ``CELERY_BROKER_URL_FILE``; the preferences file
is named through ``IDLE_ACCEL_PREFERENCES``.

Without a systemd user session (no user bus: a container, an SSH login
without lingering) or with ``--no-service``, the unit file is still written
and the same command line runs as a detached background process with a PID
file. Every file and folder written is listed in a manifest, which
``uninstall`` follows to stop the worker and remove every trace.

Everything that depends on the machine (platform, home folder, environment,
the program that runs ``systemctl``/``launchctl``/``schtasks``) is a
parameter, so the macOS and Windows files render on any OS.
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from compute import redis_clients
from compute.errors import ConfigError, IdleAccelError
from compute.settings import BACKEND_SCHEMES, read_secret, redact

SERVICE = "idle-accel-worker.service"  # systemd user unit
LABEL = "org.idle-accelerator.worker"  # launchd agent
TASK = "Idle Accelerator worker"  # Task Scheduler task
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
MANIFEST_VERSION = 1
#: Where the worker finds the broker URL and the volunteer's preferences.
URL_FILE_VAR = "CELERY_BROKER_URL_FILE"
PREFERENCES_VAR = "IDLE_ACCEL_PREFERENCES"
#: systemctl --user is-system-running: a user manager that can start units.
USABLE_STATES = ("running", "degraded", "starting", "initializing", "maintenance")


class InstallError(IdleAccelError):
    """The service manager refused, or the worker did not start (the message says why)."""


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Ran]


def run_command(argv: Sequence[str]) -> Ran:
    """Run a service manager's command; a missing program is exit 127, not an exception."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60,  # noqa: S603
                              check=False)
    except FileNotFoundError as exc:
        return Ran(127, "", str(exc))
    except subprocess.TimeoutExpired:
        return Ran(124, "", f"{argv[0]} did not answer within 60 s")
    return Ran(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Target:
    """The machine installed on: platform ('linux', 'darwin', 'win32'), the owner's home
    folder, the environment (XDG_* and APPDATA/LOCALAPPDATA), the owner's UID (launchd's
    gui domain) and DOMAIN\\user (Task Scheduler)."""

    platform: str
    home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    user: str | None = None

    @classmethod
    def here(cls) -> Target:
        env = dict(os.environ)
        user = (f"{env.get('USERDOMAIN')}\\{env['USERNAME']}"
                if sys.platform == "win32" and env.get("USERNAME") else None)
        return cls(platform=sys.platform, home=Path.home(), env=env,
                   uid=os.getuid() if hasattr(os, "getuid") else None, user=user)

    @property
    def kind(self) -> str:
        if self.platform.startswith("linux"):
            return "linux"
        if self.platform in ("darwin", "win32"):
            return self.platform
        raise ConfigError(f"native install knows Linux, macOS and Windows, not {self.platform}")

    def _dir(self, var: str, *default: str) -> Path:
        value = self.env.get(var)
        return Path(value) if value else self.home.joinpath(*default)

    @property
    def config_dir(self) -> Path:
        """Where the preferences live (as worker/preferences.py looks for them): the broker
        URL file and the manifest go beside them."""
        if self.env.get("XDG_CONFIG_HOME"):
            return Path(self.env["XDG_CONFIG_HOME"]) / "idle-accel"
        if self.kind == "win32":
            return self._dir("APPDATA", "AppData", "Roaming") / "idle-accel"
        return self.home / ".config" / "idle-accel"

    @property
    def state_dir(self) -> Path:
        """Logs and the PID file."""
        if self.kind == "linux":
            return self._dir("XDG_STATE_HOME", ".local", "state") / "idle-accel"
        if self.kind == "darwin":
            return self.home / "Library" / "Logs" / "idle-accel"
        return self._dir("LOCALAPPDATA", "AppData", "Local") / "idle-accel"

    @property
    def unit_path(self) -> Path:
        if self.kind == "linux":
            return self._dir("XDG_CONFIG_HOME", ".config") / "systemd" / "user" / SERVICE
        if self.kind == "darwin":
            return self.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return self.state_dir / "idle-accel-worker.xml"

    @property
    def secret_path(self) -> Path:
        return self.config_dir / "broker-url"

    @property
    def preferences_path(self) -> Path:
        return self.config_dir / "preferences.toml"

    @property
    def manifest_path(self) -> Path:
        return self.config_dir / "install.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "worker.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "worker.pid"

    def ours(self) -> set[Path]:
        """Every file install may write: all that uninstall will delete."""
        return {self.unit_path, self.secret_path, self.manifest_path, self.log_path,
                self.pid_path}


# --- what runs ---------------------------------------------------------------------------

def worker_argv(program: Sequence[str], *, name: str | None = None,
                concurrency: int | None = None, region: str | None = None) -> list[str]:
    """``idle-accel worker --mode volunteer`` (``program``: how to run idle-accel)."""
    argv = [*program, "worker", "--mode", "volunteer"]
    if name:
        argv += ["--name", name]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if region:
        argv += ["--region", region]
    return argv


def unit_env(target: Target) -> dict[str, str]:
    """The environment the unit gives the worker: where its secrets and preferences are."""
    return {URL_FILE_VAR: str(target.secret_path),
            PREFERENCES_VAR: str(target.preferences_path)}


# --- the three unit files ----------------------------------------------------------------

def _systemd_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _systemd_word(arg: str) -> str:
    quoted = _systemd_escape(arg).replace("$", "$$")
    return f'"{quoted}"' if not arg or re.search(r"[\s'\"\\;]", arg) else quoted


def render_systemd(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """A systemd user unit: started with the owner's user manager, at login."""
    exec_start = " ".join(_systemd_word(arg) for arg in argv)
    environment = " ".join(f'"{_systemd_escape(f"{key}={value}")}"'
                           for key, value in env.items())
    return f"""\
# Written by `idle-accel volunteer install`; `idle-accel volunteer uninstall` removes it.
# The broker URL is not here: {URL_FILE_VAR} names a file only you can read.
[Unit]
Description=Idle Accelerator volunteer worker (takes tasks only while you are away)
After=network-online.target graphical-session.target

[Service]
Type=simple
ExecStart={exec_start}
Environment={environment}
Restart=on-failure
RestartSec=10
# SIGTERM to the worker alone: it hands its running tasks back, then its pool stops.
KillMode=mixed
TimeoutStopSec=60
Nice=19
IOSchedulingClass=idle

[Install]
WantedBy=default.target
"""


def render_launchd(argv: Sequence[str], env: Mapping[str, str], log: Path) -> bytes:
    """A launchd agent: loaded in the owner's GUI session at login."""
    return plistlib.dumps({
        "Label": LABEL,
        "ProgramArguments": list(argv),
        "EnvironmentVariables": dict(env),
        "LimitLoadToSessionType": "Aqua",
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restarted after a crash, not a clean exit
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "Nice": 19,
        "LowPriorityIO": True,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    })


def _cmd_word(arg: str) -> str:
    return f'"{arg}"' if not arg or re.search(r"[\s&|<>^()]", arg) else arg


def task_arguments(argv: Sequence[str], env: Mapping[str, str], log: Path) -> str:
    """cmd.exe's arguments: Task Scheduler actions have no environment of their own, so
    cmd sets it, then runs the worker with its output appended to ``log``."""
    sets = "".join(f'set "{key}={value}" && ' for key, value in env.items())
    command = " ".join(_cmd_word(arg) for arg in argv)
    return f'/d /c {sets}{command} >> "{log}" 2>&1'


def render_task(argv: Sequence[str], env: Mapping[str, str], log: Path,
                user: str | None = None) -> bytes:
    """A Task Scheduler task (UTF-16, as ``schtasks /Create /XML`` reads it): at the
    owner's logon, in the owner's session, with least privilege."""
    def sub(parent: ET.Element, tag: str, text: str | None = None,
            **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, tag, attrs)
        element.text = text
        return element

    task = ET.Element("Task", {"version": "1.2", "xmlns": TASK_NS})
    info = sub(task, "RegistrationInfo")
    sub(info, "Description", "Idle Accelerator volunteer worker: takes tasks only while you "
                             "are away. Written by `idle-accel volunteer install`.")
    logon = sub(sub(task, "Triggers"), "LogonTrigger")
    sub(logon, "Enabled", "true")
    principal = sub(sub(task, "Principals"), "Principal", id="Author")
    if user:
        sub(logon, "UserId", user)
        sub(principal, "UserId", user)
    sub(principal, "LogonType", "InteractiveToken")  # the owner's session: its idle time
    sub(principal, "RunLevel", "LeastPrivilege")
    settings = sub(task, "Settings")
    for tag, text in (("MultipleInstancesPolicy", "IgnoreNew"),
                      ("DisallowStartIfOnBatteries", "false"),  # the worker decides on power
                      ("StopIfGoingOnBatteries", "false"),
                      ("ExecutionTimeLimit", "PT0S"), ("Hidden", "false")):
        sub(settings, tag, text)
    restart = sub(settings, "RestartOnFailure")
    sub(restart, "Interval", "PT1M")
    sub(restart, "Count", "999")
    sub(settings, "Priority", "7")  # below normal
    run = sub(sub(task, "Actions", Context="Author"), "Exec")
    sub(run, "Command", r"%SystemRoot%\System32\cmd.exe")
    sub(run, "Arguments", task_arguments(argv, env, log))
    ET.indent(task)
    text = ET.tostring(task, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-16"?>\n{text}\n'.encode("utf-16")


def render(target: Target, argv: Sequence[str]) -> bytes:
    """The unit file of ``target``'s platform for ``argv``."""
    env = unit_env(target)
    if target.kind == "linux":
        return render_systemd(argv, env).encode()
    if target.kind == "darwin":
        return render_launchd(argv, env, target.log_path)
    return render_task(argv, env, target.log_path, target.user)


# --- the broker URL ----------------------------------------------------------------------

def broker_url_from(env: Mapping[str, str], url_file: Path | None = None) -> str:
    """The broker URL to install: ``url_file``, else $CELERY_BROKER_URL_FILE's, else
    $CELERY_BROKER_URL. ConfigError (one line) when none is given or it is not Redis."""
    if url_file is not None:
        url = _read(str(url_file), "--broker-url-file")
    elif env.get(URL_FILE_VAR):
        url = _read(env[URL_FILE_VAR], URL_FILE_VAR)
    else:
        url = env.get("CELERY_BROKER_URL", "").strip()
    if not url:
        raise ConfigError("no broker URL to install: set CELERY_BROKER_URL to the URL your "
                          "team gave you (`idle-accel volunteer enroll` prints it), or give "
                          "--broker-url-file FILE")
    if redis_clients.scheme(url) not in BACKEND_SCHEMES:
        wanted = ", ".join(f"{scheme}://" for scheme in BACKEND_SCHEMES)
        raise ConfigError(f"the broker URL must start with one of {wanted} (a volunteer's "
                          f"enrolled URL); got {redact(url)!r}")
    return url


def _read(path: str, variable: str) -> str:
    try:
        return read_secret(path, variable)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# --- files -------------------------------------------------------------------------------

def _make_dirs(folder: Path, created: list[str]) -> None:
    """mkdir -p, noting each folder made (outermost first) for uninstall."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        created.append(str(path))


def _write(path: Path, data: bytes, mode: int, created: list[str]) -> None:
    """Write ``path`` with ``mode`` from its creation on (a secret is never readable by others,
    not even for a moment)."""
    _make_dirs(path.parent, created)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


# --- the background process (no service manager) -----------------------------------------

def process_env(base: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The process's environment: the caller's, less any broker or worker setting (it runs
    with exactly the unit's settings), plus the unit's."""
    kept = {key: value for key, value in base.items()
            if not key.startswith(("CELERY_", "IDLE_ACCEL_"))}
    return {**kept, **env}


def start_process(argv: Sequence[str], env: Mapping[str, str], log: Path, pid_file: Path,
                  created: list[str], settle: float = 2.0) -> int:
    """Start ``argv`` detached (its own session, output to ``log``), write its PID file;
    InstallError if it exits within ``settle`` seconds."""
    _make_dirs(log.parent, created)
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = (getattr(subprocess, "DETACHED_PROCESS", 0)
                                    | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                    | getattr(subprocess, "CREATE_NO_WINDOW", 0))
    else:
        options["start_new_session"] = True
    with log.open("ab") as out:
        os.chmod(log, 0o600)
        child = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL,  # noqa: S603
                                 stdout=out, stderr=subprocess.STDOUT, **options)
    started = psutil.Process(child.pid).create_time()
    _write(pid_file, json.dumps({"pid": child.pid, "started": started,
                                 "argv": list(argv)}).encode(), 0o600, created)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise InstallError(f"the worker exited at once (code {code}): {tail[0]} "
                               f"(log: {log})")
        time.sleep(0.1)
    return child.pid


def stop_process(pid_file: Path, timeout: float = 60.0) -> str | None:
    """Stop the process of ``pid_file`` (SIGTERM: it hands its tasks back; then its pool).
    What was done, or None when it was not running."""
    try:
        record = json.loads(pid_file.read_text())
        process = psutil.Process(int(record["pid"]))
        if abs(process.create_time() - float(record["started"])) > 1.0:
            return None  # the PID was reused by another program
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None
    try:
        children = process.children(recursive=True)
        process.terminate()
        _, alive = psutil.wait_procs([process], timeout=timeout)
        _, alive = psutil.wait_procs([*alive, *children], timeout=0 if alive else 5)
        for straggler in alive:
            with contextlib.suppress(psutil.Error):
                straggler.kill()
        psutil.wait_procs(alive, timeout=5)
    except psutil.NoSuchProcess:
        pass
    return f"stopped the worker process (PID {process.pid})"


# --- service managers --------------------------------------------------------------------

def no_user_bus(target: Target, runner: Runner) -> str | None:
    """Why ``systemctl --user`` cannot be used here, or None when it can: the user bus
    ($XDG_RUNTIME_DIR/bus) must exist and the user manager must be up."""
    runtime = target.env.get("XDG_RUNTIME_DIR")
    if not runtime:
        return "no user bus: XDG_RUNTIME_DIR is not set"
    if not (Path(runtime) / "bus").exists():
        return f"no user bus: {Path(runtime) / 'bus'} does not exist"
    ran = runner(["systemctl", "--user", "is-system-running"])
    state = ran.stdout.strip()
    if state in USABLE_STATES:
        return None
    reason = (ran.stderr.strip().splitlines() or [state or f"exit {ran.returncode}"])[-1]
    return f"systemctl --user is-system-running: {reason}"


def _check(ran: Ran, what: str) -> None:
    if ran.returncode != 0:
        detail = (ran.stderr.strip() or ran.stdout.strip() or f"exit {ran.returncode}")
        raise InstallError(f"{what} failed: {detail.splitlines()[-1]}")


def _activate(target: Target, method: str, runner: Runner) -> None:
    if method == "systemd":
        _check(runner(["systemctl", "--user", "daemon-reload"]), "systemctl --user daemon-reload")
        _check(runner(["systemctl", "--user", "enable", "--now", SERVICE]),
               f"systemctl --user enable --now {SERVICE}")
    elif method == "launchd":
        domain = f"gui/{target.uid}"
        runner(["launchctl", "bootout", f"{domain}/{LABEL}"])  # a stale one, if any
        _check(runner(["launchctl", "bootstrap", domain, str(target.unit_path)]),
               "launchctl bootstrap")
    elif method == "schtasks":
        _check(runner(["schtasks", "/Create", "/TN", TASK, "/XML", str(target.unit_path), "/F"]),
               "schtasks /Create")
        _check(runner(["schtasks", "/Run", "/TN", TASK]), "schtasks /Run")


def _deactivate(target: Target, manifest: Mapping[str, Any], runner: Runner) -> list[str]:
    method = manifest.get("method")
    if method == "process":
        done = stop_process(target.pid_path)
        return [done] if done else ["the worker process was not running"]
    if method == "systemd":
        ran = runner(["systemctl", "--user", "disable", "--now", SERVICE])
        return [f"stopped and disabled {SERVICE}" if ran.returncode == 0 else
                f"could not disable {SERVICE}: {(ran.stderr.strip() or '?').splitlines()[-1]}"]
    if method == "launchd":
        runner(["launchctl", "bootout", f"gui/{target.uid}/{LABEL}"])
        return [f"stopped and unloaded the launchd agent {LABEL}"]
    if method == "schtasks":
        runner(["schtasks", "/End", "/TN", TASK])
        ran = runner(["schtasks", "/Delete", "/TN", TASK, "/F"])
        return [f"ended and deleted the task {TASK!r}" if ran.returncode == 0 else
                f"could not delete the task {TASK!r}: {ran.stderr.strip() or '?'}"]
    return []


# --- install and uninstall ---------------------------------------------------------------

@dataclass(frozen=True)
class Installed:
    """What install did: the method ('systemd', 'launchd', 'schtasks' or 'process'), why
    it fell back to a process (None: it did not), the manifest written, the PID."""

    method: str
    fallback: str | None
    manifest: dict[str, Any]
    pid: int | None
    replaced: list[str]


def install(target: Target, broker_url: str, argv: Sequence[str], *, service: bool = True,
            runner: Runner = run_command, base_env: Mapping[str, str] | None = None,
            settle: float = 2.0) -> Installed:
    """Write the secret, the unit and the manifest; start the worker. A previous install is
    removed first (install is idempotent). On failure what was written is removed again."""
    replaced = uninstall(target, runner) if target.manifest_path.exists() else []
    fallback = None
    if not service:
        method = "process"
    elif target.kind == "linux":
        fallback = no_user_bus(target, runner)
        method = "process" if fallback else "systemd"
    else:
        method = {"darwin": "launchd", "win32": "schtasks"}[target.kind]
    created: list[str] = []
    files = [target.secret_path, target.unit_path, target.manifest_path]
    if method in ("process", "launchd", "schtasks"):
        files.append(target.log_path)
    if method == "process":
        files.append(target.pid_path)
    manifest = {"version": MANIFEST_VERSION, "platform": target.kind, "method": method,
                "service": {"systemd": SERVICE, "launchd": LABEL, "schtasks": TASK}.get(method),
                "command": list(argv), "files": [str(path) for path in files],
                "dirs": created, "installed_at": time.time()}
    pid = None
    written = False
    try:
        _write(target.secret_path, f"{broker_url}\n".encode(), 0o600, created)
        _write(target.unit_path, render(target, argv), 0o644, created)
        if method != "systemd":
            _make_dirs(target.state_dir, created)
        # The manifest before anything runs: uninstall can undo a half-done install.
        _write(target.manifest_path, _dump(manifest), 0o600, created)
        written = True
        if method == "process":
            env = process_env(os.environ if base_env is None else base_env, unit_env(target))
            pid = start_process(argv, env, target.log_path, target.pid_path, created, settle)
        else:
            _activate(target, method, runner)
    except BaseException:
        if not written:
            with contextlib.suppress(OSError):
                _write(target.manifest_path, _dump(manifest), 0o600, created)
        uninstall(target, runner)
        raise
    return Installed(method=method, fallback=fallback, manifest=manifest, pid=pid,
                     replaced=replaced)


def _dump(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def uninstall(target: Target, runner: Runner = run_command, *, purge: bool = False
              ) -> list[str]:
    """Stop the worker and remove every file and folder the manifest lists, and what the
    worker wrote in its own folders (the control page's token, the day's credit...); the
    volunteer's preferences stay unless ``purge``. What was done, one line each."""
    try:
        manifest = json.loads(target.manifest_path.read_text())
    except FileNotFoundError:
        return [f"nothing to uninstall: no {target.manifest_path}"]
    except ValueError:
        manifest = {"method": None, "files": [str(p) for p in target.ours()], "dirs": []}
    done = _deactivate(target, manifest, runner)
    ours = target.ours()
    for name in manifest.get("files", []):
        path = Path(name)
        if path not in ours:
            done.append(f"left {path}: not a file install writes")
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            done.append(f"removed {path}")
    if manifest.get("method") == "systemd":
        runner(["systemctl", "--user", "daemon-reload"])
    with contextlib.suppress(FileNotFoundError):
        target.manifest_path.unlink()  # also when the manifest was unreadable
    keep = set() if purge else {target.preferences_path}
    for folder in dict.fromkeys((target.config_dir, target.state_dir)):
        done += _clear(folder, keep)
    if target.preferences_path.exists():
        done.append(f"kept {target.preferences_path} (your preferences; --purge removes it)")
    parents = {parent for path in ours for parent in path.parents}
    for name in reversed(manifest.get("dirs", [])):
        path = Path(name)
        if path not in parents or not path.is_dir():
            continue
        try:
            path.rmdir()
            done.append(f"removed folder {path}")
        except OSError:
            if path not in (target.config_dir, target.state_dir):
                kept = ", ".join(sorted(child.name for child in path.iterdir())[:3])
                done.append(f"kept folder {path}: it holds files install did not write ({kept})")
    return done


def _clear(folder: Path, keep: set[Path]) -> list[str]:
    """Remove what the worker wrote in its own folder (idle-accel/), but ``keep``."""
    if not folder.is_dir():
        return []
    done = []
    for path in sorted(folder.iterdir()):
        if path in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        done.append(f"removed {path} (written by the worker)")
    return done
