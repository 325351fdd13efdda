"""The claim and record steps of verified results, on a real Redis (compute/verify.py)."""

from __future__ import annotations

import pytest

from compute import verify
from compute.quorum import Outcome


@pytest.fixture
def client(broker):
    with broker.client() as c:
        yield c


def _start(client, vid: str, k: int = 2) -> list[str]:
    ids = verify.replica_ids(vid, k)
    client.hset(f"idle-accel:verify:{vid}", mapping={"k": k, "task": "t", "tolerance": "0.0"})
    return ids


def test_one_machine_owns_at_most_one_replica(client):
    r1, r2 = _start(client, "v1")
    assert verify.claim(client, "v1", r1, "host-a") == "ok"
    assert verify.claim(client, "v1", r1, "host-a") == "ok"  # the same replica, delivered again
    assert verify.claim(client, "v1", r2, "host-a") == "other"
    assert verify.claim(client, "v1", r2, "host-b") == "ok"


def test_a_replica_that_moved_counts_only_from_its_new_owner(client):
    r1, r2 = _start(client, "v2")
    assert verify.claim(client, "v2", r1, "host-a") == "ok"
    assert verify.claim(client, "v2", r1, "host-c") == "ok"  # lease ran out; taken elsewhere
    assert verify.record(client, "v2", Outcome(r1, "host-a", "a", result=1)) == "moved"
    # host-a no longer owns a replica, so it may take the other one
    assert verify.claim(client, "v2", r2, "host-a") == "ok"
    assert verify.record(client, "v2", Outcome(r1, "host-c", "c", result=1)) == "recorded"
    assert verify.record(client, "v2", Outcome(r1, "host-c", "c", result=1)) == "duplicate"
    assert verify.claim(client, "v2", r1, "host-d") == "done"
    assert verify.record(client, "v2", Outcome(r2, "host-a", "a", result=1)) == "decide"


def test_an_unknown_verification_is_refused(client):
    assert verify.claim(client, "nothing-here", "nothing-here-1", "host-a") == "unknown"
