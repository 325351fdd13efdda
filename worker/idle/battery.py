"""Battery: whether the machine runs on it, and its charge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from worker.idle.reading import Battery, Measure


def _sensors_battery() -> Any:
    if not hasattr(psutil, "sensors_battery"):
        raise NotImplementedError("psutil cannot read batteries on this OS")
    return psutil.sensors_battery()


def measure(read: Callable[[], Any] = _sensors_battery) -> Measure[Battery]:
    try:
        found = read()
    except Exception as exc:
        return Measure.missing(f"battery not readable: {exc}", "battery")
    if found is None:
        return Measure.of(Battery(present=False), "battery")
    return Measure.of(Battery(present=True, percent=round(float(found.percent), 1),
                              plugged=found.power_plugged), "battery")
