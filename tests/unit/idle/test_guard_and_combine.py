"""Probe deadlines, and how several probes combine into one input or lock measure."""

from __future__ import annotations

import threading

from worker.idle.guard import Guarded
from worker.idle.input import InputIdle
from worker.idle.lock import ScreenLock
from worker.idle.reading import Measure


def test_a_hung_probe_times_out_is_not_restarted_and_recovers_when_it_returns():
    release = threading.Event()
    calls = []

    def probe():
        calls.append(1)
        release.wait(10)
        return Measure.of(5.0, "slow")

    guarded = Guarded("slow", probe, timeout=0.05)

    first = guarded()
    second = guarded()
    release.set()
    guarded._done.wait(2)
    third = guarded()

    assert "timed out after 0.05 s" in first.unknown
    assert "stuck for" in second.unknown
    assert third.value == 5.0
    assert len(calls) == 2  # never two calls in flight


def test_a_failing_probe_is_unknown_not_a_crash():
    def broken():
        raise RuntimeError("bad driver")

    assert "slow probe failed: bad driver" in Guarded("slow", broken)().unknown


def test_an_absent_probe_is_asked_again_only_after_the_retry_delay():
    now = [0.0]
    calls = []

    def absent():
        calls.append(now[0])
        return Measure.missing("no DISPLAY set")

    guarded = Guarded("x11", absent, retry_unknown=10.0, clock=lambda: now[0])
    for t in (0.0, 0.1, 5.0, 10.5, 10.6):
        now[0] = t
        assert guarded().unknown == "no DISPLAY set"

    assert calls == [0.0, 10.5]


def guarded(measure):
    return Guarded(measure.source or "p", lambda: measure)


def test_input_takes_the_most_recent_input_any_probe_saw():
    probes = [guarded(Measure.of(3600.0, "logind")), guarded(Measure.missing("no DISPLAY", "x11")),
              guarded(Measure.of(2.5, "devices"))]

    assert InputIdle(probes).measure() == Measure.of(2.5, "devices")


def test_input_unknown_when_no_probe_answers_says_why():
    probes = [guarded(Measure.missing("no DISPLAY", "x11")),
              guarded(Measure.missing("no devices", "devices"))]

    assert InputIdle(probes).measure().unknown == "no DISPLAY; no devices"


def test_lock_is_locked_if_any_probe_says_so():
    assert ScreenLock([guarded(Measure.of(False, "a")), guarded(Measure.of(True, "b"))]
                      ).measure().value is True
    assert ScreenLock([guarded(Measure.missing("x", "a")), guarded(Measure.of(False, "b"))]
                      ).measure().value is False
    assert not ScreenLock([guarded(Measure.missing("no logind", "a"))]).measure().known
