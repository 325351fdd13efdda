"""Sentinel URLs: parsed as kombu reads them, accepted by the settings, passwords redacted."""

from __future__ import annotations

import pytest

from compute.app import celery_config
from compute.errors import ConfigError
from compute.redis_clients import SentinelURL, connect, is_sentinel, parse_sentinel
from compute.settings import Settings, redact

URL = "sentinel://team:s3cret@10.0.0.1:26379;sentinel://10.0.0.2;sentinel://10.0.0.3:26380/2"


def test_a_sentinel_url_gives_every_sentinel_and_the_data_nodes_login():
    assert parse_sentinel(URL) == SentinelURL(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)),
        username="team", password="s3cret", db=2)
    assert is_sentinel(URL) and not is_sentinel("redis://h:6379/0")


def test_a_sentinel_url_mixed_with_another_scheme_is_refused():
    with pytest.raises(ValueError, match="sentinel://HOST:PORT"):
        parse_sentinel("sentinel://h:1;redis://h:2")
    with pytest.raises(ConfigError, match="same scheme"):
        Settings.load(broker_url="sentinel://h:1;redis://h:2")


def test_a_client_of_a_sentinel_url_needs_the_masters_name():
    with pytest.raises(ValueError, match="IDLE_ACCEL_SENTINEL_MASTER"):
        connect(URL, {})


def test_settings_give_celery_the_masters_name_and_the_sentinels_password():
    settings = Settings.load(broker_url=URL, sentinel_master="eu", sentinel_password="pw")
    config = celery_config(settings)

    for options in (config["broker_transport_options"],
                    config["result_backend_transport_options"]):
        assert options["master_name"] == "eu"
        assert options["sentinel_kwargs"] == {"password": "pw"}
    assert settings.broker_is_redis and settings.backend_url == URL
    assert "s3cret" not in redact(URL) and redact(URL).count("sentinel://") == 3
    described = {row[0]: row[2] for row in settings.describe()}
    assert described["sentinel_password"] == "**" and "s3cret" not in described["broker_url"]


def test_an_enrolled_volunteer_on_sentinel_keeps_its_namespace():
    settings = Settings.load(broker_url="sentinel://vol-bob:pw@h:1;sentinel://h:2/0")

    assert settings.namespace == "vol:bob:"


def test_a_password_file_fills_every_part_that_names_the_user(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("filled\n")

    settings = Settings.load(broker_url="sentinel://team@h:1;sentinel://team@h:2/0",
                             broker_password_file=str(secret))

    assert parse_sentinel(settings.broker_url).password == "filled"
    assert settings.broker_url.count("team:filled@") == 2
