"""Every IDLE_ACCEL_* setting is also a flag of `idle-accel worker` (DESIGN.md contract 2)."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from compute.settings import Settings, env_name
from worker.cli import cli, options, worker_cmd


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("IDLE_ACCEL_", "CELERY_")):
            monkeypatch.delenv(key)


def test_each_setting_but_celerys_own_variables_is_a_worker_flag():
    flags = set(inspect.signature(worker_cmd.worker).parameters)

    celerys = {key for key in Settings.model_fields if env_name(key).startswith("CELERY_")}
    assert celerys == {"broker_url", "result_backend", "broker_url_file"}
    assert flags == set(Settings.model_fields) - celerys


def test_flags_reach_the_settings_and_win_over_the_environment(monkeypatch):
    seen: list[Settings] = []
    monkeypatch.setattr(worker_cmd, "run_worker", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("IDLE_ACCEL_CPU_BUSY_PERCENT", "10")

    done = CliRunner().invoke(cli, [
        "worker", "--cpu-busy-percent", "40", "--run-on-battery", "--visibility-timeout", "30",
        "--exclusive-programs", "steam,zoom", "--loglevel", "debug",
        "--allow-emergency-when-busy", "--queues", "cpu,gpu"])

    assert done.exit_code == 0, done.output
    settings = seen[0]
    assert settings.cpu_busy_percent == 40.0 and settings.run_on_battery is True
    assert settings.visibility_timeout == 30 and settings.log_level == "DEBUG"
    assert settings.exclusive_programs == ("steam", "zoom")
    assert settings.allow_emergency_when_busy is True
    assert settings.queues == ("cpu", "gpu")


def test_a_flag_not_given_leaves_the_variable_in_charge(monkeypatch):
    seen: list[Settings] = []
    monkeypatch.setattr(worker_cmd, "run_worker", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("IDLE_ACCEL_IDLE_AFTER", "42")

    assert CliRunner().invoke(cli, ["worker"]).exit_code == 0
    assert seen[0].idle_after == 42.0


def test_boolean_flags_have_a_negative_form():
    assert options.flag_name("require_input") == "--require-input/--no-require-input"
    assert options.flag_name("idle_after") == "--idle-after"
