"""Volunteer namespaces: names, URLs, ACL rules, and what a namespaced worker's app sets."""

from __future__ import annotations

import pytest

from compute import namespace
from compute.app import celery_config
from compute.errors import ConfigError
from compute.settings import Settings

DIGEST = "a" * 64


@pytest.mark.parametrize("name", ["alice", "a", "lab-7_gpu", "x" * 48])
def test_usable_names(name: str) -> None:
    assert namespace.check_name(name) == name
    assert namespace.prefix(name) == f"vol:{name}:"
    assert namespace.username(name) == f"vol-{name}"


@pytest.mark.parametrize("name", ["", "Alice", "a:b", "a*", "a@b", "-a", "x" * 49, "a b"])
def test_names_that_could_escape_a_namespace_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="volunteer name"):
        namespace.check_name(name)


def test_a_broker_url_names_its_volunteer() -> None:
    assert namespace.volunteer_of("redis://vol-alice:pw@host:6379/0") == "alice"
    assert namespace.of_url("rediss://vol-bob:pw@host:6380/0") == "vol:bob:"
    assert namespace.of_url("redis://team:pw@host:6379/0") == ""
    assert namespace.of_url("redis://:pw@host:6379/0") == ""
    assert namespace.of_url("amqp://vol-alice:pw@host//") == ""
    assert namespace.of_url("redis://vol-Bad*:pw@host/0") == ""


def test_acl_rules_confine_keys_and_channels_to_the_namespace() -> None:
    rules = namespace.acl_rules("alice", DIGEST)
    assert rules[:3] == ["reset", "on", f"#{DIGEST}"]
    patterns = [r for r in rules if r[0] in "~&%"]
    assert patterns == ["~vol:alice:*", "&vol:alice:*", "&vol:alice:/0.celery.pidbox"]
    assert "-@all" in rules and "+select" not in rules
    assert not {"+keys", "+scan", "+config", "+flushall", "+acl", "+monitor"} & set(rules)
    assert "+select" in namespace.acl_rules("alice", DIGEST, db=3)
    assert "&vol:alice:/3.celery.pidbox" in namespace.acl_rules("alice", DIGEST, db=3)
    with pytest.raises(ValueError, match="64"):
        namespace.acl_rules("alice", "not-a-hash")


def test_a_volunteers_worker_puts_every_key_under_its_prefix() -> None:
    settings = Settings.load(broker_url="redis://vol-alice:pw@127.0.0.1:6379/0")
    assert settings.namespace == "vol:alice:"
    config = celery_config(settings)
    assert config["broker_transport_options"]["global_keyprefix"] == "vol:alice:"
    assert config["result_backend_transport_options"]["global_keyprefix"] == "vol:alice:"
    team = celery_config(Settings.load(broker_url="redis://team:pw@127.0.0.1:6379/0"))
    assert "global_keyprefix" not in team["broker_transport_options"]


def test_broker_and_backend_must_be_the_same_volunteer() -> None:
    with pytest.raises(ConfigError, match="same volunteer"):
        Settings.load(broker_url="redis://vol-alice:pw@h:6379/0",
                      result_backend="redis://team:pw@h:6379/0")
