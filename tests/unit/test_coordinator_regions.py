"""The pure parts of regions on separate brokers (compute/coordinator/regions.py)."""

from __future__ import annotations

import pytest

from compute import keys
from compute.coordinator import ledger, regions
from compute.errors import ConfigError
from compute.settings import Settings


def test_an_out_record_is_keyed_by_the_sha1_redis_computes_and_holds_its_list():
    raw = b'{"headers": {"id": "t1"}}\n{"more": 1}'
    # redis.sha1hex's value (lowercase hex SHA-1): the Lua and Python agree on the field.
    assert regions.digest(b"abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"
    # The Lua keeps LIST + "\n" + MESSAGE; the first newline ends the list's name.
    assert regions.unpack(b"cpu@eu-west\x06\x163\n" + raw) == ("cpu@eu-west\x06\x163", raw)
    with pytest.raises(ValueError):
        regions.unpack(b"no separator")


def test_the_regional_url_comes_from_the_settings_and_its_file_wins(tmp_path, monkeypatch):
    def url(**given):
        return regions.regional_url(Settings.load(broker_url="redis://team/0", **given))

    assert url() is None
    assert url(region_redis_url="redis://r:6379/0") == "redis://r:6379/0"
    secret = tmp_path / "url"
    secret.write_text("redis://:pw@regional:6379/0\n")
    monkeypatch.setenv(regions.URL_VARIABLE, "redis://other/0")  # the variables' names
    monkeypatch.setenv(regions.URL_FILE_VARIABLE, str(secret))
    assert url() == "redis://:pw@regional:6379/0"
    secret.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        url()
    with pytest.raises(ConfigError, match="cannot read"):
        url(region_redis_url_file=str(tmp_path / "missing"))
    described = dict((row[0], row[2]) for row in Settings.load(
        broker_url="redis://team/0", region_redis_url="redis://:secret@r/0").describe())
    assert "secret" not in described["region_redis_url"]


def test_region_names_are_checked_and_keys_are_per_region():
    assert regions.check_region("eu-west") == "eu-west"
    with pytest.raises(ConfigError):
        regions.check_region("EU West")
    assert keys.region_out("eu-west") != keys.region_out("us-east")
    assert keys.region_out("eu-west").startswith(keys.PREFIX)
    # A central coordinator recovers inboxes by pattern: a region's records are not in it.
    assert not keys.region_out("eu-west").startswith(keys.COORDINATOR_INBOX)


def test_a_regional_placement_does_not_look_for_an_inbox_on_the_regional_redis():
    assert "LREM', KEYS[2]" in ledger._PLACE
    assert "LREM', KEYS[2]" not in ledger._PLACE_REGIONAL
    assert ledger._PLACE_REGIONAL.count("\n") == ledger._PLACE.count("\n") - 1
