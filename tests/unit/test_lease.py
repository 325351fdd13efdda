"""The lease keeper's bookkeeping, with a fake of the fenced renewal (the Lua itself runs
against a real Redis in ``tests/integration/test_lease_fence.py``)."""

from __future__ import annotations

from worker import lease
from worker.lease import LeaseKeeper


class FakeRenew:
    """Scores in a dict; the same fence as the Lua: a window, or None for any score."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.windows: list[dict] = []

    def __call__(self, client, held, now, index):
        self.windows.append(dict(held))
        lost = {}
        for tag, window in held.items():
            score = self.scores.get(tag)
            if score is None:
                lost[tag] = "gone"
            elif window and not window[0] <= score <= window[1]:
                lost[tag] = "taken"
            else:
                self.scores[tag] = now
        return lost


def keeper(scores, held, *, clock=lambda: 9.0, **kwargs):
    renew = FakeRenew(scores)
    ended = []
    made = LeaseKeeper(lambda: None, held, interval=5, clock=clock, renew=renew,
                       on_lost=lambda tag, why: ended.append((tag, why)), **kwargs)
    return made, renew, ended


def test_a_tag_acknowledged_during_renewal_is_not_reported_lost():
    listings = [["a", "gone"], ["a"]]  # "gone" finished between listing and renewal
    made, _, ended = keeper({"a": 1.0}, lambda: listings.pop(0) if len(listings) > 1
                            else listings[0])
    made.tick()
    assert made.lost == [] and made.renewed == 1 and ended == []


def test_a_tag_gone_from_the_broker_is_reported_lost_once_and_its_copy_kept():
    made, _, ended = keeper({}, lambda: ["a"])
    made.tick()
    made.tick()
    assert made.lost == ["a"] and ended == []  # the broker lost it: this copy is the only one


def test_in_a_volunteer_namespace_a_lease_taken_back_ends_the_copy():
    made, _, ended = keeper({}, lambda: ["a"], gone_is_lost=True)
    made.tick()
    assert ended == [("a", "gone")] and made.ended == ["a"]


def test_the_first_renewal_is_fenced_by_the_delivery_window_then_by_what_it_wrote():
    lease.DELIVERED["fresh"] = (100.0, 100.5)
    now = [101.0]
    made, renew, ended = keeper({"fresh": 100.2}, lambda: ["fresh"], clock=lambda: now[0])
    made.tick()
    low, high = renew.windows[0]["fresh"]
    assert low < 100.0 < 100.5 < high and "fresh" not in lease.DELIVERED
    now[0] = 104.0
    made.tick()
    low, high = renew.windows[1]["fresh"]
    assert low < 101.0 < high and high - low < 0.01  # exactly what this worker wrote
    assert made.renewed == 2 and ended == []


def test_a_lease_another_worker_took_while_this_one_was_frozen_ends_this_copy():
    made, renew, ended = keeper({"a": 50.0}, lambda: ["a"])
    made.tick()  # renewed to 9.0
    renew.scores["a"] = 30.0  # frozen: the task went back and another worker's delivery wrote 30
    made.tick()
    assert ended == [("a", "taken")] and made.lost == ["a"]
    assert renew.scores["a"] == 30.0  # the new holder's lease is left alone


def test_a_tag_with_no_record_is_renewed_whatever_its_score():
    made, renew, _ = keeper({"old": 1.0}, lambda: ["old"])
    made.tick()
    assert renew.windows[0] == {"old": None} and renew.scores["old"] == 9.0


def test_a_lease_given_up_is_never_renewed_again_while_the_task_is_still_held():
    made, renew, ended = keeper({"a": 50.0}, lambda: ["a"])
    made.tick()
    renew.scores["a"] = 30.0  # taken by another worker
    made.tick()
    made.tick()  # this copy is still being ended: its tag is still listed
    assert renew.windows[-1] == {} and renew.scores["a"] == 30.0 and len(ended) == 1
