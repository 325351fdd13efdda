"""Settings: read from the environment when built, validated, secrets kept out of messages."""

from __future__ import annotations

import pytest

from compute.errors import ConfigError
from compute.hostid import machine_host_id
from compute.settings import Settings, env_name

SECRET = "pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("IDLE_ACCEL_", "CELERY_")):
            monkeypatch.delenv(key)


def test_defaults_talk_to_a_local_redis_for_both_broker_and_results():
    settings = Settings.load()

    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.backend_url == settings.broker_url
    assert settings.queues == ()  # automatic: cpu, and gpu where NVML sees one
    assert settings.concurrency is None
    assert (settings.mode, settings.sensor, settings.region) == ("volunteer", "auto", None)


def test_environment_is_read_when_settings_are_built(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "rediss://:x@broker.example:6380/1")
    monkeypatch.setenv("IDLE_ACCEL_QUEUES", " cpu , gpu,emergency ")
    monkeypatch.setenv("IDLE_ACCEL_CONCURRENCY", "3")
    monkeypatch.setenv("IDLE_ACCEL_VISIBILITY_TIMEOUT", "120")
    monkeypatch.setenv("IDLE_ACCEL_LOG_LEVEL", "debug")

    settings = Settings.load()

    assert settings.broker_url == "rediss://:x@broker.example:6380/1"
    assert settings.queues == ("cpu", "gpu", "emergency")
    assert settings.concurrency == 3
    assert settings.visibility_timeout == 120
    assert settings.log_level == "DEBUG"


def test_flags_override_the_environment_and_none_means_not_given(monkeypatch):
    monkeypatch.setenv("IDLE_ACCEL_QUEUES", "gpu")
    monkeypatch.setenv("IDLE_ACCEL_NAME", "from-env")

    settings = Settings.load(queues="cpu,emergency", name=None)

    assert settings.queues == ("cpu", "emergency")
    assert settings.name == "from-env"


@pytest.mark.parametrize("url", ["http://u:pa55word@host/", "sqs://", "memory://", "filesystem://",
                                 "redis+socket:///tmp/s", "", "127.0.0.1:6379"])
def test_broker_must_be_redis_or_amqp(monkeypatch, url):
    monkeypatch.setenv("CELERY_BROKER_URL", url)

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    message = str(caught.value)
    assert ("CELERY_BROKER_URL: must start with one of redis://, rediss://, sentinel://, "
            "amqp://, amqps://") in message
    assert SECRET not in message


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:p@h:6380/0", "amqp://u:p@h//"])
def test_accepted_brokers(url):
    assert Settings.load(broker_url=url, result_backend="redis://h/1").broker_url == url


def test_amqp_broker_needs_a_redis_result_backend():
    with pytest.raises(ConfigError, match="CELERY_RESULT_BACKEND must be set"):
        Settings.load(broker_url="amqp://guest:guest@localhost//")

    settings = Settings.load(broker_url="amqp://h//", result_backend="redis://h:6379/1")
    assert settings.backend_url == "redis://h:6379/1"
    assert not settings.broker_is_redis


def test_result_backend_must_be_redis(monkeypatch):
    monkeypatch.setenv("CELERY_RESULT_BACKEND", f"db+postgresql://u:{SECRET}@h/db")

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    assert "CELERY_RESULT_BACKEND: must start with one of redis://, rediss://" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("queues", "cpu,Bad Queue", "IDLE_ACCEL_QUEUES: "),
    ("region", "EU West", "IDLE_ACCEL_REGION: region 'EU West' is not allowed"),
    ("mode", "sometimes", "IDLE_ACCEL_MODE: "),
    ("sensor", "file:", "IDLE_ACCEL_SENSOR: must be 'auto' or 'file:PATH'"),
    ("sensor", "x11", "IDLE_ACCEL_SENSOR: must be 'auto' or 'file:PATH'"),
    ("concurrency", 0, "IDLE_ACCEL_CONCURRENCY: "),
    ("visibility_timeout", 1, "IDLE_ACCEL_VISIBILITY_TIMEOUT: "),
    ("unacked_restore_interval", float("nan"), "IDLE_ACCEL_UNACKED_RESTORE_INTERVAL: "),
    ("log_level", "LOUD", "IDLE_ACCEL_LOG_LEVEL: must be one of DEBUG"),
])
def test_bad_values_name_the_variable(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        Settings.load(**{key: value})


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'concurency'"):
        Settings.load(concurency=2)


def test_every_setting_has_an_environment_variable_and_a_meaning():
    rows = Settings.load(broker_url=f"redis://:{SECRET}@h:1/0").describe()

    assert {row[0] for row in rows} == set(Settings.model_fields)
    assert all(row[1] == env_name(row[0]) and row[3] for row in rows)
    assert env_name("broker_url") == "CELERY_BROKER_URL"
    assert env_name("queues") == "IDLE_ACCEL_QUEUES"
    assert SECRET not in repr(rows)


def test_security_warnings_flag_open_or_plain_brokers_but_not_local_ones():
    assert Settings.load(broker_url="redis://127.0.0.1:6379/0").security_warnings() == []
    assert Settings.load(broker_url="rediss://:p@broker.example:6380/0").security_warnings() == []

    open_plain = Settings.load(broker_url="redis://broker.example:6379/0").security_warnings()
    assert any("no password" in w for w in open_plain)
    assert any("not encrypted" in w for w in open_plain)


def test_an_empty_host_id_means_the_machine_decides(monkeypatch):
    monkeypatch.setenv("IDLE_ACCEL_HOST_ID", "")
    settings = Settings.load(broker_url="redis://h")
    assert settings.host_id is None and settings.host == machine_host_id()
    monkeypatch.setenv("IDLE_ACCEL_HOST_ID", " rack-7 ")
    assert Settings.load(broker_url="redis://h").host == "rack-7"


def test_the_broker_password_comes_from_its_file_into_broker_and_backend(monkeypatch, tmp_path):
    secret = tmp_path / "redis_team_password"
    secret.write_text("s3cret/with@odd:chars\n")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://team@redis:6379/0")
    monkeypatch.setenv("IDLE_ACCEL_BROKER_PASSWORD_FILE", str(secret))
    settings = Settings.load()
    assert settings.broker_url == "redis://team:s3cret%2Fwith%40odd%3Achars@redis:6379/0"
    assert settings.backend_url == settings.broker_url
    # A URL that already carries a password keeps it.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://team:given@redis:6379/0")
    assert Settings.load().broker_url == "redis://team:given@redis:6379/0"


def test_the_whole_broker_url_may_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "volunteer_broker_url"
    secret.write_text("redis://vol-box:pw@redis:6379/0\n")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://ignored@elsewhere:1/0")
    monkeypatch.setenv("CELERY_BROKER_URL_FILE", str(secret))
    assert Settings.load().broker_url == "redis://vol-box:pw@redis:6379/0"


@pytest.mark.parametrize("content", [None, "\n"])
def test_a_missing_or_empty_secret_file_is_a_clear_error(monkeypatch, tmp_path, content):
    secret = tmp_path / "volunteer_broker_url"
    if content is not None:
        secret.write_text(content)
    monkeypatch.setenv("CELERY_BROKER_URL_FILE", str(secret))
    with pytest.raises(ConfigError, match=r"CELERY_BROKER_URL_FILE: .*(cannot read|is empty)"):
        Settings.load()
