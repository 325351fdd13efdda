"""The weekly schedule: windows per weekday, past midnight, across the week's end, and DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from worker.schedule import Schedule, Window

BERLIN = "Europe/Berlin"


def at(text: str, zone: str = BERLIN) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def week(**days: list[str]) -> Schedule:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return Schedule(tuple(tuple(Window.parse(w) for w in days.get(name, [])) for name in names),
                    BERLIN)


def test_a_window_allows_its_hours_only():
    nine_to_five = week(wed=["09:00-17:00"])  # 2026-12-02 is a Wednesday
    assert not nine_to_five.allows(at("2026-12-02T08:59"))
    assert nine_to_five.allows(at("2026-12-02T09:00"))
    assert nine_to_five.allows(at("2026-12-02T16:59"))
    assert not nine_to_five.allows(at("2026-12-02T17:00"))
    assert not nine_to_five.allows(at("2026-12-03T10:00"))  # Thursday has none


def test_an_overnight_window_runs_into_the_next_day_even_one_without_windows():
    nights = week(fri=["22:00-07:00"])
    assert nights.allows(at("2026-12-04T23:30"))  # Friday night
    assert nights.allows(at("2026-12-05T06:59"))  # Saturday morning: Friday's window
    assert not nights.allows(at("2026-12-05T07:00"))
    assert not nights.allows(at("2026-12-05T23:00"))  # Saturday has no window of its own


def test_sundays_overnight_window_crosses_the_weeks_end_into_monday():
    sunday_night = week(sun=["20:00-06:00"])
    assert sunday_night.allows(at("2026-12-06T21:00"))
    assert sunday_night.allows(at("2026-12-07T05:00"))  # Monday, from Sunday's window
    assert not sunday_night.allows(at("2026-12-07T06:00"))


def test_a_window_keeps_its_clock_hours_across_the_dst_changes():
    nights = week(sat=["01:00-04:00"], sun=["01:00-04:00"])
    # 2026-03-29 (Sunday): clocks go 02:00 -> 03:00 in Berlin, the window is 2 h long.
    assert nights.allows(at("2026-03-29T01:30"))
    assert nights.allows(at("2026-03-29T03:30"))
    assert not nights.allows(at("2026-03-29T04:00"))
    start, end = at("2026-03-29T01:00"), nights.next_change(at("2026-03-29T01:00"))
    assert end == at("2026-03-29T04:00") and end - start == 2 * 3600
    # 2026-10-25 (Sunday): 03:00 -> 02:00, the window is 4 h long.
    start = at("2026-10-25T01:00")
    assert nights.next_change(start) - start == 4 * 3600


def test_next_change_names_the_next_opening_across_days():
    weekend = week(sat=["00:00-24:00"], sun=["00:00-24:00"])
    opening = weekend.next_change(at("2026-12-02T12:00"))
    assert opening == at("2026-12-05T00:00")
    assert weekend.next_change(opening) == at("2026-12-07T00:00")  # Sat+Sun: one stretch
    assert Schedule.always().next_change(at("2026-12-02T12:00")) is None
    assert week().next_change(at("2026-12-02T12:00")) is None


@pytest.mark.parametrize("text", ["9-17", "25:00-26:00", "09:00-09:00", "10:60-11:00",
                                  "24:30-01:00", "nine-five"])
def test_bad_windows_say_what_is_wrong(text):
    with pytest.raises(ValueError, match=r"HH:MM|time of day|empty"):
        Window.parse(text)
