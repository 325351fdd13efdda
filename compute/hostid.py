"""The identity of the physical machine a worker runs on.

Verified results (``verify=k``) must come from k distinct machines, not k
workers or containers on one. Two workers are on the same machine when they
report the same host id: by default a digest of the OS machine id
(``/etc/machine-id``, which the worker container mounts read-only from the
host), else the host name. The digest keeps the raw machine id, a stable
identifier of the volunteer's computer, out of Redis.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_host_id(files: tuple[str, ...] = MACHINE_ID_FILES) -> str:
    """``m-`` and 16 hex digits of the machine id's digest; the host name without one."""
    for name in files:
        try:
            text = Path(name).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if text:
            return "m-" + hashlib.sha256(f"idle-accel:{text}".encode()).hexdigest()[:16]
    return socket.gethostname() or "unknown-host"
