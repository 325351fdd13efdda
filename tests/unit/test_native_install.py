"""worker/native_install.py: the three platforms' unit files rendered for a fake home, the
secret file, the manifest, and uninstall leaving nothing behind (no real service manager)."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import stat
import sys
import xml.etree.ElementTree as ET
from configparser import ConfigParser
from pathlib import Path

import psutil
import pytest

from compute.errors import ConfigError
from worker import native_install as ni

URL = "redis://alice:s3cret-pw@broker.example:6380/0"
PROGRAM = ["/opt/idle accel/bin/idle-accel"]  # a space: quoting is part of the test
NS = {"t": ni.TASK_NS}


class FakeRunner:
    """Records the service manager's commands; answers from ``answers`` (argv prefix)."""

    def __init__(self, answers: dict[tuple[str, ...], ni.Ran] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        for prefix, ran in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return ran
        return ni.Ran(0)


def everything_under(home: Path) -> list[Path]:
    return sorted(home.rglob("*"))


def linux(home: Path, bus: bool = True) -> ni.Target:
    env = {}
    if bus:
        runtime = home.parent / "run-user"
        runtime.mkdir(exist_ok=True)
        (runtime / "bus").touch()
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return ni.Target(platform="linux", home=home, env=env, uid=1000)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def assert_secret(target: ni.Target) -> None:
    mode = stat.S_IMODE(target.secret_path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert target.secret_path.read_text().strip() == URL


def test_linux_systemd_user_unit_names_the_secret_file_not_the_url(home):
    target = linux(home)
    runner = FakeRunner({("systemctl", "--user", "is-system-running"): ni.Ran(0, "running\n")})
    argv = ni.worker_argv(PROGRAM, name="alice-pc", concurrency=2)
    done = ni.install(target, URL, argv, runner=runner)

    assert done.method == "systemd" and done.fallback is None
    assert target.unit_path == home / ".config/systemd/user/idle-accel-worker.service"
    text = target.unit_path.read_text()
    assert "s3cret-pw" not in text and "broker.example" not in text
    unit = ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    assert shlex.split(unit["Service"]["ExecStart"]) == [
        *PROGRAM, "worker", "--mode", "volunteer", "--name", "alice-pc", "--concurrency", "2"]
    env = dict(item.split("=", 1) for item in shlex.split(unit["Service"]["Environment"]))
    assert env == {"CELERY_BROKER_URL_FILE": str(home / ".config/idle-accel/broker-url"),
                   "IDLE_ACCEL_PREFERENCES": str(home / ".config/idle-accel/preferences.toml")}
    assert unit["Install"]["WantedBy"] == "default.target"  # the user manager: at login
    assert unit["Service"]["Restart"] == "on-failure"
    assert_secret(target)
    assert ["systemctl", "--user", "enable", "--now", ni.SERVICE] in runner.calls

    removed = ni.uninstall(target, runner)
    assert ["systemctl", "--user", "disable", "--now", ni.SERVICE] in runner.calls
    assert f"removed {target.unit_path}" in removed
    assert everything_under(home) == []


def test_systemd_quotes_spaces_and_escapes_specifiers():
    text = ni.render_systemd(["/home/a b/100%/idle-accel", "worker", "$HOME"],
                             {"IDLE_ACCEL_PREFERENCES": "/home/a b/p%.toml"})
    line = next(row for row in text.splitlines() if row.startswith("ExecStart="))
    assert line == 'ExecStart="/home/a b/100%%/idle-accel" worker $$HOME'
    assert 'Environment="IDLE_ACCEL_PREFERENCES=/home/a b/p%%.toml"' in text


def test_macos_launchd_agent(home):
    target = ni.Target(platform="darwin", home=home, env={}, uid=501)
    runner = FakeRunner()
    done = ni.install(target, URL, ni.worker_argv(PROGRAM), runner=runner)

    assert done.method == "launchd"
    assert target.unit_path == home / "Library/LaunchAgents/org.idle-accelerator.worker.plist"
    raw = target.unit_path.read_bytes()
    assert b"s3cret-pw" not in raw
    agent = plistlib.loads(raw)
    assert agent["Label"] == ni.LABEL
    assert agent["ProgramArguments"] == [*PROGRAM, "worker", "--mode", "volunteer"]
    assert agent["EnvironmentVariables"] == {
        "CELERY_BROKER_URL_FILE": str(home / ".config/idle-accel/broker-url"),
        "IDLE_ACCEL_PREFERENCES": str(home / ".config/idle-accel/preferences.toml")}
    assert agent["RunAtLoad"] is True and agent["LimitLoadToSessionType"] == "Aqua"
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardErrorPath"] == str(home / "Library/Logs/idle-accel/worker.log")
    assert_secret(target)
    assert ["launchctl", "bootstrap", "gui/501", str(target.unit_path)] in runner.calls

    ni.uninstall(target, runner)
    assert ["launchctl", "bootout", f"gui/501/{ni.LABEL}"] in runner.calls
    assert everything_under(home) == []


def test_windows_task_runs_at_logon_with_least_privilege(home):
    target = ni.Target(platform="win32", home=home, env={}, user="ALICE-PC\\alice")
    runner = FakeRunner()
    program = ["C:\\Users\\alice\\.local\\bin\\idle-accel.exe"]
    done = ni.install(target, URL, ni.worker_argv(program), runner=runner)

    assert done.method == "schtasks"
    raw = target.unit_path.read_bytes()
    assert raw.startswith(b"\xff\xfe")  # UTF-16, as Task Scheduler exports and reads it
    assert "s3cret-pw" not in raw.decode("utf-16")
    task = ET.fromstring(raw)  # noqa: S314 - our own file
    assert task.tag == f"{{{ni.TASK_NS}}}Task"
    assert task.find("t:Triggers/t:LogonTrigger/t:Enabled", NS).text == "true"
    assert task.find("t:Triggers/t:LogonTrigger/t:UserId", NS).text == "ALICE-PC\\alice"
    principal = task.find("t:Principals/t:Principal", NS)
    assert principal.find("t:RunLevel", NS).text == "LeastPrivilege"
    assert principal.find("t:LogonType", NS).text == "InteractiveToken"
    assert task.find("t:Settings/t:ExecutionTimeLimit", NS).text == "PT0S"
    run = task.find("t:Actions/t:Exec", NS)
    assert run.find("t:Command", NS).text.endswith("cmd.exe")
    arguments = run.find("t:Arguments", NS).text
    env = dict(re.findall(r'set "([^=]+)=([^"]*)"', arguments))
    assert env == {"CELERY_BROKER_URL_FILE": str(home / "AppData/Roaming/idle-accel/broker-url"),
                   "IDLE_ACCEL_PREFERENCES":
                       str(home / "AppData/Roaming/idle-accel/preferences.toml")}
    assert f"{program[0]} worker --mode volunteer >> " in arguments
    assert_secret(target)
    assert ["schtasks", "/Create", "/TN", ni.TASK, "/XML", str(target.unit_path), "/F"] \
        in runner.calls

    ni.uninstall(target, runner)
    assert ["schtasks", "/Delete", "/TN", ni.TASK, "/F"] in runner.calls
    assert everything_under(home) == []


def test_config_folders_follow_the_platforms_variables(tmp_path):
    xdg = ni.Target(platform="linux", home=tmp_path,
                    env={"XDG_CONFIG_HOME": str(tmp_path / "cfg"),
                         "XDG_STATE_HOME": str(tmp_path / "st")})
    assert xdg.secret_path == tmp_path / "cfg/idle-accel/broker-url"
    assert xdg.unit_path == tmp_path / "cfg/systemd/user" / ni.SERVICE
    assert xdg.pid_path == tmp_path / "st/idle-accel/worker.pid"
    win = ni.Target(platform="win32", home=tmp_path,
                    env={"APPDATA": str(tmp_path / "R"), "LOCALAPPDATA": str(tmp_path / "L")})
    assert win.preferences_path == tmp_path / "R/idle-accel/preferences.toml"
    assert win.unit_path == tmp_path / "L/idle-accel/idle-accel-worker.xml"
    with pytest.raises(ConfigError, match="not freebsd"):
        ni.Target(platform="freebsd14", home=tmp_path).unit_path  # noqa: B018


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_without_a_user_bus_the_unit_is_written_and_a_process_runs_until_uninstall(home):
    target = linux(home, bus=False)
    runner = FakeRunner()
    done = ni.install(target, URL, SLEEPER, runner=runner, base_env={"PATH": os.defpath},
                      settle=0.2)

    assert done.method == "process" and "no user bus" in done.fallback
    assert not any("enable" in call for call in runner.calls)
    assert target.unit_path.exists() and target.pid_path.exists()
    process = psutil.Process(done.pid)
    environ = process.environ()
    assert environ["CELERY_BROKER_URL_FILE"] == str(target.secret_path)
    assert "CELERY_BROKER_URL" not in environ

    removed = ni.uninstall(target, runner)
    assert removed[0] == f"stopped the worker process (PID {done.pid})"
    assert not psutil.pid_exists(done.pid) or process.status() == psutil.STATUS_ZOMBIE
    assert everything_under(home) == []


def test_no_service_starts_a_process_even_with_a_user_bus(home):
    target = linux(home)
    runner = FakeRunner({("systemctl",): ni.Ran(0, "running\n")})
    done = ni.install(target, URL, SLEEPER, service=False, runner=runner, base_env={},
                      settle=0.1)
    try:
        assert done.method == "process" and done.fallback is None and runner.calls == []
    finally:
        ni.uninstall(target, runner)
    assert everything_under(home) == []


def test_a_worker_that_exits_at_once_fails_the_install_and_leaves_nothing(home):
    target = linux(home, bus=False)
    argv = [sys.executable, "-c", "import sys; print('refused: wrong password'); sys.exit(2)"]
    with pytest.raises(ni.InstallError, match=r"exited at once \(code 2\): refused"):
        ni.install(target, URL, argv, runner=FakeRunner(), base_env={}, settle=5)
    assert everything_under(home) == []


def test_a_refused_enable_fails_the_install_and_leaves_nothing(home):
    target = linux(home)
    runner = FakeRunner({("systemctl", "--user", "is-system-running"): ni.Ran(0, "degraded"),
                         ("systemctl", "--user", "enable"): ni.Ran(1, "", "Unit is masked.")})
    with pytest.raises(ni.InstallError, match=r"enable --now .* failed: Unit is masked"):
        ni.install(target, URL, ni.worker_argv(PROGRAM), runner=runner)
    assert everything_under(home) == []


def test_install_again_replaces_the_previous_one(home):
    target = ni.Target(platform="darwin", home=home, env={}, uid=501)
    runner = FakeRunner()
    ni.install(target, URL, ni.worker_argv(PROGRAM), runner=runner)
    other = "redis://alice:new-pw@broker.example:6380/0"
    done = ni.install(target, other, ni.worker_argv(PROGRAM, name="b"), runner=runner)

    assert any(line.startswith("stopped and unloaded") for line in done.replaced)
    assert target.secret_path.read_text().strip() == other
    assert plistlib.loads(target.unit_path.read_bytes())["ProgramArguments"][-1] == "b"
    ni.uninstall(target, runner)
    assert everything_under(home) == []


def test_uninstall_keeps_the_preferences_and_what_the_manifest_should_not_name(home):
    target = ni.Target(platform="darwin", home=home, env={}, uid=501)
    runner = FakeRunner()
    ni.install(target, URL, ni.worker_argv(PROGRAM), runner=runner)
    target.preferences_path.write_text("[usage]\n")
    (target.config_dir / "control-token").write_text("t")  # the worker's control page
    stranger = home / "precious.txt"
    stranger.write_text("keep me")
    manifest = ni.json.loads(target.manifest_path.read_text())
    manifest["files"].append(str(stranger))
    target.manifest_path.write_text(ni.json.dumps(manifest))

    said = ni.uninstall(target, runner)
    assert stranger.exists() and target.preferences_path.exists()
    assert f"left {stranger}: not a file install writes" in said
    assert f"removed {target.config_dir / 'control-token'} (written by the worker)" in said
    assert f"kept {target.preferences_path} (your preferences; --purge removes it)" in said
    assert sorted(target.config_dir.iterdir()) == [target.preferences_path]
    assert not target.unit_path.exists() and not target.state_dir.exists()
    assert ni.uninstall(target, runner) == [f"nothing to uninstall: no {target.manifest_path}"]


def test_uninstall_purge_removes_the_preferences_too(home):
    target = linux(home)
    runner = FakeRunner({("systemctl", "--user", "is-system-running"): ni.Ran(0, "running")})
    ni.install(target, URL, ni.worker_argv(PROGRAM), runner=runner)
    target.preferences_path.write_text("[usage]\n")
    ni.uninstall(target, runner, purge=True)
    assert everything_under(home) == []


def test_the_broker_url_comes_from_a_file_or_the_environment(tmp_path):
    secret = tmp_path / "url"
    secret.write_text(URL + "\n")
    assert ni.broker_url_from({}, secret) == URL
    assert ni.broker_url_from({"CELERY_BROKER_URL_FILE": str(secret),
                               "CELERY_BROKER_URL": "redis://other/0"}) == URL
    assert ni.broker_url_from({"CELERY_BROKER_URL": URL}) == URL
    with pytest.raises(ConfigError, match=r"^no broker URL to install: set CELERY_BROKER_URL"):
        ni.broker_url_from({})
    with pytest.raises(ConfigError, match="must start with one of redis://") as refused:
        ni.broker_url_from({"CELERY_BROKER_URL": "amqp://alice:s3cret-pw@rabbit//"})
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(ConfigError, match="cannot read"):
        ni.broker_url_from({}, tmp_path / "missing")
