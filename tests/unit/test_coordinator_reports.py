"""A volunteer's status report, cleaned: named after its volunteer, bounded, never a crash."""

from __future__ import annotations

import pytest

from compute.coordinator import reports
from compute.coordinator.reports import BadReport

NOW = 1_000_000.0


def report(**fields):
    return {"node": "alice@laptop", "at": NOW - 1, "state": "idle", "queues": ["cpu"],
            "consuming": ["cpu"], "concurrency": 2, "hardware": {"cores": 8}, **fields}


def test_a_report_is_named_after_its_volunteer_whatever_it_claims() -> None:
    assert reports.clean("alice", report(), now=NOW)["node"] == "alice@laptop"
    assert reports.clean("mallory", report(node="ghost@evil"), now=NOW)["node"] == "mallory@evil"
    assert reports.clean("mallory", report(node="x@../../"), now=NOW)["node"] == "mallory@worker"
    assert reports.clean("mallory", report(node=7), now=NOW)["node"] == "mallory@worker"


def test_hardware_and_counts_are_bounded() -> None:
    found = reports.clean("m", report(hardware={"cores": 4096, "ram_bytes": "lots",
                                                "gpus": "x"}, running=10**9), now=NOW)
    assert found["hardware"] == {"cores": reports.MAX_CORES, "ram_bytes": 0, "gpus": []}
    assert found["running"] == reports.MAX_CONCURRENCY


@pytest.mark.parametrize("raw, why", [
    ("not an object", "object"),
    (report(state="sleeping"), "state"),
    (report(at=NOW - 3600), "stale"),
    (report(at="now"), "stale"),
    (report(concurrency=4096), "concurrency"),
    (report(concurrency="many"), "concurrency"),
    (report(consuming=["q"] * 100), "at most"),
])
def test_unusable_reports_are_refused_with_a_reason(raw, why: str) -> None:
    with pytest.raises(BadReport, match=why):
        reports.clean("m", raw, now=NOW)


def test_only_task_queues_are_kept() -> None:
    found = reports.clean("m", report(consuming=["cpu", "idle-accel:verdicts", "../x", 7,
                                                 "gpu.vram24@eu-west", "cpu:x"]), now=NOW)
    assert found["consuming"] == ["cpu", "gpu.vram24@eu-west"]


def test_the_team_queue_is_never_served_to_a_volunteer() -> None:
    """A training round's start and close write the model: a volunteer that says it
    consumes ``team`` is not believed, so the coordinator never assigns it such a step."""
    found = reports.clean("m", report(consuming=["team", "cpu", "team@eu-west"]), now=NOW)
    assert found["consuming"] == ["cpu"]
