"""The fenced lease renewal (``worker/lease.py``'s Lua) on a real Redis."""

from __future__ import annotations

from worker.lease import renew


def test_a_lease_is_renewed_only_while_its_score_is_the_one_this_worker_expects(broker):
    with broker.client() as client:
        client.zadd("unacked_index", {"mine": 100.25, "fresh": 200.5, "taken": 300.0,
                                      "any": 1.0})
        outcome = renew(client, {"mine": (100.25, 100.25), "fresh": (200.0, 201.0),
                                 "taken": (250.0, 250.0), "any": None, "acked": (1.0, 2.0)},
                        now=400.125)
        scores = dict((tag.decode(), score) for tag, score in
                      client.zrange("unacked_index", 0, -1, withscores=True))

    assert outcome["acked"] == "gone" and outcome["taken"].startswith("taken")
    assert set(outcome) == {"taken", "acked"} and "300.000" in outcome["taken"]
    assert scores == {"mine": 400.125, "fresh": 400.125, "any": 400.125, "taken": 300.0}
    # a score written with repr() reads back inside a window of that same value
    with broker.client() as client:
        assert renew(client, {"mine": (400.125, 400.125)}, now=401.0) == {}
