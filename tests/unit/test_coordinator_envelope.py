"""The volunteer's copy of a team message: task, id and arguments kept; continuations gone."""

from __future__ import annotations

import base64
import json

import pytest

from compute.coordinator import envelope
from compute.coordinator.envelope import MalformedMessage
from compute.verify import HEADER


def team_message(embed: dict | None = None, **headers) -> bytes:
    body = [[1, "two"], {"k": 3}, embed if embed is not None else {
        "callbacks": [{"task": "team.next", "args": [], "kwargs": {}, "options": {}}],
        "errbacks": [{"task": "celery.starmap", "args": [], "kwargs": {}, "options": {}}],
        "chain": [{"task": "team.after"}], "chord": {"task": "team.body"}}]
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"task": "compute.diag.sleep", "id": "t-1", "idle_accel_sig": "SIG",
                    **headers},
        "properties": {"delivery_tag": "team-tag", "body_encoding": "base64", "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": "cpu"}},
    }).encode()


def test_parse_reads_task_id_arguments_and_verification() -> None:
    message = envelope.parse(team_message(**{HEADER: "v-1"}))
    assert (message.name, message.task_id) == ("compute.diag.sleep", "t-1")
    assert message.args == [1, "two"] and message.kwargs == {"k": 3}
    assert message.verification == "v-1"
    assert envelope.parse(team_message()).verification is None


def test_the_volunteer_copy_keeps_the_task_and_drops_what_acts_for_the_team() -> None:
    raw, tag = envelope.for_volunteer(envelope.parse(team_message(**{HEADER: "v-1"})), "cpu.ram4")
    copy = json.loads(raw)
    body = json.loads(base64.b64decode(copy["body"]))
    assert body[0] == [1, "two"] and body[1] == {"k": 3}
    assert all(body[2][key] is None for key in ("callbacks", "errbacks", "chain", "chord"))
    assert copy["headers"]["id"] == "t-1" and copy["headers"]["idle_accel_sig"] == "SIG"
    assert HEADER not in copy["headers"]
    assert copy["properties"]["delivery_tag"] == tag != "team-tag"
    assert copy["properties"]["delivery_info"]["routing_key"] == "cpu.ram4"
    _, other = envelope.for_volunteer(envelope.parse(team_message()), "cpu")
    assert other != tag  # each assignment is its own unacked entry


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (json.dumps({"headers": {}, "properties": {}, "body": "", "content-type":
                 "application/json"}).encode(), "name and id"),
    (team_message().replace(b'"application/json"', b'"application/x-python-serialize"'),
     "not JSON"),
])
def test_malformed_messages_are_named(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        envelope.parse(raw)


def test_a_body_that_is_not_args_kwargs_embed_is_refused() -> None:
    data = json.loads(team_message())
    data["body"] = base64.b64encode(b'{"a": 1}').decode()
    with pytest.raises(MalformedMessage, match=r"\[args, kwargs, embed\]"):
        envelope.parse(json.dumps(data))


def test_priority_lists_follow_kombu() -> None:
    assert envelope.priority_lists("cpu") == ["cpu", "cpu\x06\x163", "cpu\x06\x166",
                                              "cpu\x06\x169"]
    assert envelope.queue_of_list("cpu@eu\x06\x163") == "cpu@eu"
