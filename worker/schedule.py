"""The volunteer's weekly schedule: when work may run, by local wall-clock hours. Pure.

BOINC's ``start_hour``/``end_hour`` with per-weekday ``day_prefs``: each day
has windows ``HH:MM-HH:MM`` in the volunteer's time zone. A window whose end
is not after its start runs past midnight into the next day ("22:00-07:00");
``24:00`` is the end of the day. Times are wall-clock times in the zone, so a
window keeps its hours across a DST change (it is an hour shorter or longer
that night), as a person reading a clock expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    start: int  # minutes after local midnight, 0..1439
    end: int  # minutes after local midnight, 1..1440; <= start: runs past midnight

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"HH:MM-HH:MM"``; raises ValueError naming what is wrong."""
        found = _HHMM.match(text)
        if not found:
            raise ValueError(f"{text!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(part) for part in found.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"{text!r} is not a time of day")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ValueError(f"{text!r} is empty (use 00:00-24:00 for the whole day)")
        return cls(start, end)

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Schedule:
    """Windows per weekday (Monday first); a day with none takes no work."""

    days: tuple[tuple[Window, ...], ...]
    zone: str | None = None  # IANA name; None: the machine's local zone

    @classmethod
    def always(cls) -> Schedule:
        return cls(tuple((Window(0, 1440),) for _ in DAYS))

    @property
    def is_always(self) -> bool:
        return all(any(w.start == 0 and w.end == 1440 for w in day) for day in self.days)

    def _local(self, wall: float) -> datetime:
        zone = ZoneInfo(self.zone) if self.zone else None
        return datetime.fromtimestamp(wall, zone).astimezone(zone)

    def allows(self, wall: float) -> bool:
        """Whether work may run at ``wall`` (seconds since the epoch)."""
        local = self._local(wall)
        now = local.hour * 60 + local.minute
        today = local.weekday()
        for window in self.days[today]:
            if window.start <= now < (1440 if window.overnight else window.end):
                return True
        yesterday = (today - 1) % 7
        return any(window.overnight and now < window.end for window in self.days[yesterday])

    def next_change(self, wall: float, *, horizon_days: int = 8) -> float | None:
        """When ``allows`` next flips, to the minute (None: never within the horizon)."""
        now = self.allows(wall)
        local = self._local(wall)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        candidates: set[float] = set()
        zone = local.tzinfo
        for offset in range(-1, horizon_days + 1):
            day = midnight + timedelta(days=offset)
            for window in self.days[day.weekday()]:
                for minutes in (window.start, window.end + (1440 if window.overnight else 0)):
                    at = (day + timedelta(minutes=minutes)).replace(tzinfo=zone)
                    stamp = _resolve(at)
                    if stamp > wall:
                        candidates.add(stamp)
        for stamp in sorted(candidates):
            if self.allows(stamp) != now:
                return stamp
        return None

    def describe(self) -> dict[str, list[str]]:
        return {name: [str(w) for w in day] for name, day in zip(DAYS, self.days, strict=True)}


def _resolve(at: datetime) -> float:
    """An aware local time as a timestamp; a time skipped by DST maps to just after the gap."""
    zone = at.tzinfo
    stamp = at.timestamp()
    if zone is not None and datetime.fromtimestamp(stamp, zone).replace(tzinfo=None) != \
            at.replace(tzinfo=None):
        return at.replace(fold=1).timestamp()
    return stamp

