"""The verdict on verified results (compute/quorum.py), and the machine identity."""

from __future__ import annotations

import pytest

from compute.hostid import machine_host_id
from compute.quorum import Outcome, decide, same


def outcome(i: int, result=None, error=None) -> Outcome:
    return Outcome(f"r{i}", f"host-{i}", f"node-{i}", result=result, error=error)


def test_agreeing_results_are_accepted():
    verdict = decide([outcome(1, {"a": [1, 2]}), outcome(2, {"a": [1, 2]})], 2)
    assert verdict.agreed and verdict.value == {"a": [1, 2]}
    assert verdict.summary() == "2 hosts agree (node-1, node-2)"


def test_a_different_result_is_a_disagreement_naming_every_machine():
    verdict = decide([outcome(1, 5), outcome(2, 6), outcome(3, 5)], 3)
    assert not verdict.agreed and verdict.value is None
    assert [[o.node for o in group] for group in verdict.groups] == [
        ["node-1", "node-3"], ["node-2"]]
    assert "node-2 (host host-2) -> 6" in verdict.summary()


def test_numbers_may_differ_by_the_tolerance_only():
    assert decide([outcome(1, [1.0, 2.0]), outcome(2, [1.0, 2.0000001])], 2, 1e-6).agreed
    assert not decide([outcome(1, [1.0, 2.0]), outcome(2, [1.0, 2.001])], 2, 1e-6).agreed
    assert not decide([outcome(1, [1.0]), outcome(2, [1.0000001])], 2).agreed


def test_json_types_are_not_confused():
    assert not same(True, 1)
    assert not same(1, "1")
    assert not same({"a": 1}, {"a": 1, "b": None})
    assert not same([1, 2], [1, 2, 3])
    assert same(None, None)


def test_errors_agree_only_with_the_same_error():
    assert decide([outcome(1, error="E: x"), outcome(2, error="E: x")], 2).error == "E: x"
    assert not decide([outcome(1, error="E: x"), outcome(2, result=None)], 2).agreed


def test_a_verdict_needs_k_outcomes_from_distinct_hosts():
    with pytest.raises(ValueError, match="needs 2 outcomes"):
        decide([outcome(1, 1)], 2)
    twin = Outcome("r2", "host-1", "node-2", result=1)
    with pytest.raises(ValueError, match="distinct hosts"):
        decide([outcome(1, 1), twin], 2)


def test_machine_id_is_digested_and_stable(tmp_path):
    path = tmp_path / "machine-id"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    first = machine_host_id((str(tmp_path / "missing"), str(path)))
    assert first == machine_host_id((str(path),))
    assert first.startswith("m-") and len(first) == 18 and "0123456789abcdef" not in first
    path.write_text("another machine\n")
    assert machine_host_id((str(path),)) != first


def test_without_a_machine_id_the_host_name_is_used(tmp_path):
    import socket

    assert machine_host_id((str(tmp_path / "none"),)) == socket.gethostname()
