"""Adaptive replication (BOINC): more replicas on disagreement, until k agree or the cap."""

from __future__ import annotations

from compute.quorum import Outcome, Verdict, adaptive


def o(host: str, value, replica: str | None = None) -> Outcome:
    return Outcome(replica=replica or f"r-{host}", host=host, node=f"{host}@n", result=value)


def test_k_agreeing_hosts_decide() -> None:
    verdict = adaptive([o("a", 1), o("b", 1)], k=2, cap=5)
    assert isinstance(verdict, Verdict) and verdict.agreed and verdict.value == 1


def test_one_liar_asks_for_one_more_replica_and_then_loses() -> None:
    assert adaptive([o("a", 42), o("liar", 41)], k=2, cap=5) == 1
    verdict = adaptive([o("a", 42), o("liar", 41), o("c", 42)], k=2, cap=5)
    assert isinstance(verdict, Verdict) and verdict.agreed and verdict.value == 42
    assert {x.host for x in verdict.groups[0]} == {"a", "c"}
    assert "dissent: liar@n (host liar) -> 41" in verdict.summary()


def test_a_host_counts_once() -> None:
    assert adaptive([o("a", 1, "r1"), o("a", 1, "r2")], k=2, cap=5) == 1


def test_past_the_cap_it_fails() -> None:
    five = [o("a", 1), o("b", 2), o("c", 3), o("d", 4), o("e", 5)]
    verdict = adaptive(five, k=2, cap=5)
    assert isinstance(verdict, Verdict) and not verdict.agreed
    assert adaptive(five[:4], k=2, cap=5) == 1  # one more could still agree with one
    assert isinstance(adaptive(five[:3], k=3, cap=4), Verdict)  # 2 more needed, 1 allowed


def test_errors_agree_like_values() -> None:
    bad = [Outcome("r1", "a", "a@n", error="InvalidArgument: x"),
           Outcome("r2", "b", "b@n", error="InvalidArgument: x")]
    verdict = adaptive(bad, k=2, cap=5)
    assert isinstance(verdict, Verdict) and verdict.agreed and verdict.error

