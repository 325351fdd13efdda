"""The sensor file (DESIGN.md contract 5): the host tells a containerized worker about its owner.

Format: the first word is ``idle`` or ``busy``, or the file is a JSON object
with ``"state": "idle"|"busy"`` and optional details. What this project
writes also carries ``"at"`` (epoch seconds, for staleness),
``"idle_seconds"`` (how long the owner has been away) and ``"reasons"``.
Missing, unreadable or unknown content counts as busy.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.idle.reading import HostReport, Measure

MAX_BYTES = 64 * 1024
STATES = ("idle", "busy")


def parse(text: str, *, mtime: float, now: float) -> HostReport:
    """A :class:`HostReport` from the file's text; ``problem`` says what is wrong with it."""
    stripped = text.strip()
    age = max(0.0, now - mtime)
    if not stripped:
        return HostReport("busy", age, problem="sensor file is empty")
    if not stripped.startswith("{"):
        word = stripped.split()[0].lower()
        if word in STATES:
            return HostReport(word, age)
        return HostReport("busy", age, problem=f"unknown state {word[:20]!r} (want idle or busy)")
    try:
        data = json.loads(stripped)
    except ValueError as exc:
        return HostReport("busy", age, problem=f"invalid JSON: {exc}")
    if not isinstance(data, dict):
        return HostReport("busy", age, problem="JSON is not an object")
    state = data.get("state")
    if state not in STATES:
        return HostReport("busy", age, problem=f"unknown state {str(state)[:20]!r} "
                                               "(want idle or busy)")
    at = data.get("at")
    if _number(at):
        age = max(0.0, now - float(at))
    idle_seconds = data.get("idle_seconds")
    reasons = data.get("reasons") or []
    texts = tuple(str(r.get("message", r) if isinstance(r, dict) else r)[:200]
                  for r in reasons[:20]) if isinstance(reasons, list) else ()
    return HostReport(state, age, float(idle_seconds) if _number(idle_seconds)
                      and idle_seconds >= 0 else None, texts)


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def read(path: Path, now: float | None = None) -> Measure[HostReport]:
    """The sensor file at ``path`` as a measure (a missing file reads as busy)."""
    now = time.time() if now is None else now
    try:
        with open(path, "rb") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return Measure.of(HostReport("busy", 0.0, problem=f"{path} does not exist"), "file")
    except OSError as exc:
        return Measure.of(HostReport("busy", 0.0, problem=f"{path} unreadable: "
                                                          f"{exc.strerror}"), "file")
    if len(raw) > MAX_BYTES:
        return Measure.of(HostReport("busy", 0.0, problem=f"larger than {MAX_BYTES} bytes"),
                          "file")
    return Measure.of(parse(raw.decode("utf-8", "replace"), mtime=mtime, now=now), "file")


def write(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` with ``document`` as JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, separators=(",", ":"))
            handle.write("\n")
        os.chmod(temp, 0o644)  # the worker in its container runs as another user
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
