"""Lease renewal against a fake Redis pipeline: ZADD XX CH semantics, lost leases."""

from __future__ import annotations

from worker.lease import LeaseKeeper, renew


class FakeRedis:
    """Just enough of redis-py: a sorted set with ZADD XX CH through a pipeline."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[tuple] = []

    def pipeline(self, transaction=True):
        return FakePipe(self)


class FakePipe:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.queued = redis, []

    def zadd(self, key, mapping, xx=False, ch=False):
        self.queued.append((key, mapping, xx, ch))
        return self

    def execute(self):
        results = []
        for key, mapping, xx, ch in self.queued:
            assert (key, xx, ch) == ("unacked_index", True, True)
            changed = 0
            for member, score in mapping.items():
                if member in self.redis.scores and self.redis.scores[member] != score:
                    self.redis.scores[member] = score
                    changed += 1
            results.append(changed)
        self.redis.calls.append(len(self.queued))
        return results


def test_renew_moves_held_leases_to_now_and_never_adds_an_acknowledged_task():
    redis = FakeRedis({"a": 100.0, "b": 100.0, "other-worker": 100.0})

    lost = renew(redis, ["a", "b", "acked"], now=130.0)

    assert lost == ["acked"]
    assert redis.scores == {"a": 130.0, "b": 130.0, "other-worker": 100.0}
    assert redis.calls == [3]  # one round trip for all


def test_a_tag_acknowledged_during_renewal_is_not_reported_lost():
    redis = FakeRedis({"a": 1.0})
    held = [["a", "gone"], ["a"]]  # "gone" finished between listing and renewal
    keeper = LeaseKeeper(lambda: redis, lambda: held.pop(0) if len(held) > 1 else held[0],
                         interval=5, clock=lambda: 9.0)

    keeper.tick()

    assert keeper.lost == [] and keeper.renewed == 1


def test_a_tag_still_held_but_gone_from_the_broker_is_reported_lost_once():
    redis = FakeRedis({})
    keeper = LeaseKeeper(lambda: redis, lambda: ["a"], interval=5, clock=lambda: 9.0)

    keeper.tick()
    keeper.tick()

    assert keeper.lost == ["a"]
