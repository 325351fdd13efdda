"""The sensor file format (contract 5): parse, read and write."""

from __future__ import annotations

import json
import os
import stat

import pytest

from worker.idle import hostfile

NOW = 1_800_000_000.0


@pytest.mark.parametrize(("text", "state"), [("idle", "idle"), ("busy\n", "busy"),
                                             ("IDLE since 10:00", "idle"),
                                             ('{"state": "busy"}', "busy")])
def test_first_word_or_json_state(text, state):
    report = hostfile.parse(text, mtime=NOW - 2, now=NOW)

    assert (report.state, report.problem, report.age) == (state, None, 2.0)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"), ("away", "unknown state 'away'"), ("{not json", "invalid JSON"),
    ('["idle"]', "unknown state"), ('{"state": "idle"} trailing', "invalid JSON"),
    ("[1, 2]", "unknown state"), ("  \n ", "empty"),
    ('{"state": "sleeping"}', "unknown state 'sleeping'"),
    ('{"idle_seconds": 5}', "unknown state 'None'"),
])
def test_unknown_content_counts_as_busy_with_a_problem(text, problem):
    report = hostfile.parse(text, mtime=NOW, now=NOW)

    assert report.state == "busy"
    assert problem in report.problem


def test_json_details_at_and_idle_seconds():
    text = json.dumps({"state": "idle", "at": NOW - 3, "idle_seconds": 400,
                       "reasons": [{"code": "input", "message": "input 1 s ago"}, "x"]})

    report = hostfile.parse(text, mtime=NOW - 100, now=NOW)

    assert report.age == 3.0  # "at" wins over the file time
    assert report.idle_seconds == 400.0
    assert report.reasons == ("input 1 s ago", "x")


@pytest.mark.parametrize("bad", ["NaN", "-1", '"5"', "true", "1e999"])
def test_nonsense_idle_seconds_are_ignored(bad):
    report = hostfile.parse(f'{{"state": "idle", "idle_seconds": {bad}}}', mtime=NOW, now=NOW)

    assert report.idle_seconds is None and report.problem is None


def test_missing_unreadable_and_oversized_files_are_busy(tmp_path):
    missing = hostfile.read(tmp_path / "nope").value
    big = tmp_path / "big"
    big.write_text("idle " + "x" * hostfile.MAX_BYTES)

    assert missing.state == "busy" and "does not exist" in missing.problem
    assert "larger than" in hostfile.read(big).value.problem


def test_write_is_atomic_readable_by_others_and_round_trips(tmp_path):
    path = tmp_path / "run" / "state"

    hostfile.write(path, {"state": "idle", "at": NOW, "idle_seconds": 12.5})
    hostfile.write(path, {"state": "busy", "at": NOW + 1, "idle_seconds": 0})

    assert sorted(os.listdir(path.parent)) == ["state"]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    report = hostfile.read(path, now=NOW + 2).value
    assert (report.state, report.age, report.idle_seconds) == ("busy", 1.0, 0.0)
