"""Test only: tasks that use memory and scratch disk, for the volunteer's caps.

A worker started with ``--include tests.integration.usage_tasks`` serves them.
"""

from __future__ import annotations

import os
import tempfile
import time

from celery import shared_task

MIB = 1 << 20


@shared_task(name="usage.hog", bind=True)
def hog(self, mib: int, hold: float = 0.0) -> dict:
    """Take ``mib`` MiB of memory (every page written), keep it ``hold`` seconds."""
    block = b"\x01" * (mib * MIB)
    time.sleep(hold)
    return {"hostname": self.request.hostname, "mib": len(block) // MIB}


@shared_task(name="usage.scratch", bind=True)
def scratch_write(self, mib: int, hold: float = 0.0) -> dict:
    """Write ``mib`` MiB to a temporary file (the task's scratch folder), keep it ``hold`` s."""
    folder = tempfile.gettempdir()
    with tempfile.NamedTemporaryFile(delete=False) as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    time.sleep(hold)
    return {"hostname": self.request.hostname, "folder": folder,
            "tmpdir": os.environ.get("TMPDIR"), "file": out.name}
