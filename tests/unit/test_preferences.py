"""The preferences file: every key validated with a one-line error, edits that keep
comments, and a watcher that reloads on change and keeps the last good values."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from worker import preferences
from worker.preferences import Preferences, PreferencesError, Watched, parse

FULL = """
# my machine
[when]
idle_after = "5m"      # five minutes
paused = false
timezone = "Europe/Berlin"
cpu_while_present = 10
[when.schedule]
every_day = ["18:00-08:00"]
sat = ["00:00-24:00"]

[usage]
max_cpus_percent = 50
cpu_limit_percent = 60
task_memory_mb = 2048
total_memory_mb = 4096
scratch_disk_gb = 5

[gpu]
while_present = true
keep_tasks = true

[power]
run_on_battery = true
battery_floor = 40

[control]
port = 0
"""


def test_every_key_is_read():
    prefs = parse(tomllib.loads(FULL))
    assert prefs.idle_after == 300 and prefs.cpu_while_present == 10
    assert prefs.schedule.zone == "Europe/Berlin"
    assert [str(w) for w in prefs.schedule.days[0]] == ["18:00-08:00"]  # every_day
    assert [str(w) for w in prefs.schedule.days[5]] == ["00:00-24:00"]  # sat
    assert (prefs.max_cpus_percent, prefs.cpu_limit_percent) == (50, 60)
    assert (prefs.task_memory_mb, prefs.total_memory_mb, prefs.scratch_disk_gb) == (2048, 4096, 5)
    assert prefs.gpu_while_present and prefs.keep_gpu_tasks
    assert prefs.run_on_battery is True and prefs.battery_floor == 40
    assert prefs.control_port == 0


def test_no_file_and_an_empty_file_are_the_defaults(tmp_path):
    assert preferences.load(tmp_path / "none.toml") == Preferences()
    (tmp_path / "empty.toml").write_text("")
    assert preferences.load(tmp_path / "empty.toml") == Preferences()
    assert Preferences().schedule.is_always


@pytest.mark.parametrize(("text", "message"), [
    ("[usage]\ncpu_limit_percent = 150", "usage.cpu_limit_percent: must be between 5 and 100, "
                                         "got 150"),
    ("[usage]\ntask_memory_mb = 1.5", "usage.task_memory_mb: must be a whole number"),
    ("[when]\nidle_afer = 3", "[when] unknown key 'idle_afer' (did you mean 'idle_after'?)"),
    ("[wen]\nidle_after = 3", "unknown key 'wen' (did you mean 'when'?)"),
    ("[when]\nidle_after = \"soon\"", "when.idle_after: 'soon' is not a duration"),
    ("[when]\ntimezone = \"Mars/Olympus\"", "when.timezone: 'Mars/Olympus' is not a known"),
    ("[when.schedule]\nmon = [\"9-17\"]", "when.schedule: '9-17' is not HH:MM-HH:MM"),
    ("[when.schedule]\nmonday = [\"09:00-17:00\"]", "unknown key 'monday' (did you mean 'mon'?)"),
    ("[gpu]\nkeep_tasks = \"yes\"", "gpu.keep_tasks: must be true or false"),
    ("[power]\nbattery_floor = true", "power.battery_floor: must be a number"),
    ("when = 3", "[when] must be a table"),
])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PreferencesError) as error:
        preferences.load(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(str(path))


def test_not_toml_is_one_line_too(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[usage\n")
    with pytest.raises(PreferencesError, match="not TOML"):
        preferences.load(path)


def test_cores_follow_the_share_and_never_reach_zero():
    assert Preferences(max_cpus_percent=50).cores(8) == 4
    assert Preferences(max_cpus_percent=30).cores(8) == 2
    assert Preferences(max_cpus_percent=1).cores(8) == 1
    assert Preferences().cores(2) == 2


def test_update_keeps_comments_validates_first_and_is_owner_only(tmp_path):
    path = tmp_path / "prefs.toml"
    path.write_text(FULL)
    changed = preferences.update(path, {"usage": {"cpu_limit_percent": 25},
                                        "when": {"paused": True}})
    assert changed.cpu_limit_percent == 25 and changed.paused
    text = path.read_text()
    assert "# my machine" in text and "# five minutes" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = path.read_text()
    with pytest.raises(PreferencesError, match="cpu_limit_percent"):
        preferences.update(path, {"usage": {"cpu_limit_percent": 0}})
    assert path.read_text() == before  # a refused edit writes nothing
    preferences.update(path, {"when": {"paused": None}})  # None removes the key
    assert not preferences.load(path).paused


def test_update_creates_a_missing_file(tmp_path):
    path = tmp_path / "new" / "prefs.toml"
    assert preferences.update(path, {"when": {"snooze_until": 1e9}}).snooze_until == 1e9
    assert preferences.load(path).snooze_until == 1e9


def test_watched_reloads_on_change_and_keeps_the_last_good_preferences(tmp_path):
    path = tmp_path / "prefs.toml"
    path.write_text("[usage]\ncpu_limit_percent = 50\n")
    now = [0.0]
    watched = Watched(path, every=1.0, clock=lambda: now[0])
    assert watched.current().cpu_limit_percent == 50
    path.write_text("[usage]\ncpu_limit_percent = 70\n")
    assert watched.current().cpu_limit_percent == 50  # not yet: checked once a second
    now[0] = 1.0
    assert watched.current().cpu_limit_percent == 70
    path.write_text("[usage]\ncpu_limit_percent = 700\n")  # a typo
    now[0] = 2.0
    assert watched.current().cpu_limit_percent == 70 and "700" in watched.problem
    path.write_text("[usage]\ncpu_limit_percent = 80\n")
    assert watched.reload_now().cpu_limit_percent == 80 and watched.problem is None
    path.unlink()
    assert watched.reload_now() == Preferences()  # no file: the defaults


def test_the_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(preferences.ENV, str(tmp_path / "x.toml"))
    assert preferences.default_path() == tmp_path / "x.toml"
    monkeypatch.delenv(preferences.ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert preferences.default_path() == tmp_path / "idle-accel" / "preferences.toml"


def test_flags_and_variables_are_the_base_the_file_overrides(tmp_path, monkeypatch):
    from compute.settings import Settings

    monkeypatch.setenv("IDLE_ACCEL_CPU_LIMIT_PERCENT", "40")
    monkeypatch.setenv("IDLE_ACCEL_SCHEDULE", "every_day=18:00-08:00;sat=00:00-24:00,")
    base = preferences.defaults_from(Settings.load(task_memory_mb=512, timezone="Asia/Tokyo"))
    assert (base.cpu_limit_percent, base.task_memory_mb) == (40, 512)
    assert [str(w) for w in base.schedule.days[5]] == ["00:00-24:00"]
    assert [str(w) for w in base.schedule.days[0]] == ["18:00-08:00"]
    path = tmp_path / "p.toml"
    path.write_text("[usage]\ncpu_limit_percent = 70\n")
    merged = preferences.load(path, base)
    assert (merged.cpu_limit_percent, merged.task_memory_mb) == (70, 512)  # the file wins
    assert merged.schedule.zone == "Asia/Tokyo" and not merged.schedule.is_always


@pytest.mark.parametrize(("key", "value"), [("IDLE_ACCEL_SCHEDULE", "mon=9-17"),
                                            ("IDLE_ACCEL_TIMEZONE", "Mars/Olympus")])
def test_a_bad_schedule_or_zone_variable_is_a_settings_error(monkeypatch, key, value):
    from compute.errors import ConfigError
    from compute.settings import Settings

    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key):
        Settings.load()
