"""Input idle time while input events are watched: the polled probes are asked seldom and
carried forward, and an event wins at once."""

from __future__ import annotations

from worker.idle.guard import Guarded
from worker.idle.input import InputIdle
from worker.idle.reading import Measure


def test_polled_probes_are_asked_every_refresh_while_armed_and_carried_forward_between():
    now = [100.0]
    asked = []

    def x11() -> Measure[float]:
        asked.append(now[0])
        return Measure.of(50.0, "x11")

    event = [Measure.missing("no input event since the owner left", "xinput2")]
    armed = [True]
    inputs = InputIdle([Guarded("x11", x11, timeout=None)], armed=lambda: armed[0],
                       events=Guarded("events", lambda: event[0], timeout=None,
                                      retry_unknown=0.0),
                       refresh=10.0, clock=lambda: now[0])

    assert inputs.measure().value == 50.0
    now[0] = 104.0
    assert inputs.measure().value == 54.0 and asked == [100.0]  # carried forward, not asked
    event[0] = Measure.of(0.002, "xinput2")  # the owner moved the mouse
    assert inputs.measure().value == 0.002
    event[0] = Measure.missing("no input event since the owner left", "xinput2")
    now[0] = 110.0
    inputs.measure()
    assert asked == [100.0, 110.0]  # asked again after the refresh interval
    armed[0] = False  # the owner is present: every probe on every read
    inputs.measure()
    inputs.measure()
    assert asked == [100.0, 110.0, 110.0, 110.0]


def test_without_events_every_read_asks_every_probe():
    asked = []
    inputs = InputIdle([Guarded("x11", lambda: asked.append(1) or Measure.of(3.0), timeout=None)])
    inputs.measure()
    inputs.measure()
    assert asked == [1, 1]
