"""What every OS backend shares: platform flags and small helpers.

Backends (``_linux``, ``_windows``, ``_macos``) are plain modules importable on
any OS (their OS calls happen inside functions), so each can be tested here
with faked data sources. ``worker.idle.backend`` picks one at import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from worker.idle.reading import Measure

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"
MACOS = sys.platform == "darwin"

Probe = Callable[[], Measure[Any]]


def seconds_since(then: float, now: float) -> float:
    """``now - then``, never negative (clocks and file times can be a little ahead)."""
    return max(0.0, now - then)
