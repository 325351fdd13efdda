"""What crosses out of a namespace: events and answers under the volunteer's own name only."""

from __future__ import annotations

import base64
import json

from compute.coordinator.relay import MAX_EVENT_BYTES, rewrite_event, rewrite_reply


def message(body) -> bytes:
    return json.dumps({"body": base64.b64encode(json.dumps(body).encode()).decode(),
                       "properties": {"body_encoding": "base64"}}).encode()


def body_of(raw: bytes) -> dict:
    return json.loads(base64.b64decode(json.loads(raw)["body"]))


def held(task_id: str) -> bool:
    return task_id == "mine"


def test_events_of_its_own_tasks_pass_under_its_own_name() -> None:
    out = rewrite_event("mallory", message({"type": "task-succeeded", "uuid": "mine",
                                            "hostname": "alice@h"}), held)
    assert body_of(out)["hostname"] == "mallory@h"
    beat = rewrite_event("mallory", message({"type": "worker-heartbeat", "hostname": "x@y"}),
                         held)
    assert body_of(beat)["hostname"] == "mallory@y"


def test_a_buffered_batch_keeps_only_its_own_tasks_events() -> None:
    batch = [{"type": "task-started", "uuid": "mine", "hostname": "ghost@x"},
             {"type": "task-succeeded", "uuid": "theirs", "hostname": "alice@h"},
             "junk"]
    out = body_of(rewrite_event("mallory", message(batch), held))
    assert out == [{"type": "task-started", "uuid": "mine", "hostname": "mallory@x"}]
    assert rewrite_event("mallory", message(batch[1:]), held) is None


def test_foreign_odd_or_huge_events_are_dropped() -> None:
    assert rewrite_event("m", message({"type": "task-succeeded", "uuid": "theirs"}), held) is None
    assert rewrite_event("m", message({"type": "worker-shutdown-all"}), held) is None
    assert rewrite_event("m", b"not json", held) is None
    big = message({"type": "worker-heartbeat", "pad": "x" * MAX_EVENT_BYTES})
    assert rewrite_event("m", big, held) is None


def test_answers_carry_only_the_volunteers_own_name() -> None:
    out = rewrite_reply("alice", message({"deadworker@nowhere": {"ok": "pong"}}))
    assert body_of(out) == {"alice@nowhere": {"ok": "pong"}}
    assert rewrite_reply("alice", message({"a@x": {}, "b@y": {}})) is None
    assert rewrite_reply("alice", message(["not", "an", "object"])) is None
