"""The OS backend for this machine, picked once at import (the psutil way)."""

from __future__ import annotations

import sys

from worker.idle._common import LINUX, MACOS, WINDOWS

if LINUX:
    from worker.idle import _linux as current
elif WINDOWS:
    from worker.idle import _windows as current
elif MACOS:
    from worker.idle import _macos as current
else:  # pragma: no cover - no other OS is supported
    raise NotImplementedError(f"owner-idle detection does not support {sys.platform!r}")

__all__ = ["current"]
