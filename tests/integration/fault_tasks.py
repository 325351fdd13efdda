"""Test only: the task of the fault suite, with a side effect guarded by an idempotency record.

A worker started with ``--include tests.integration.fault_tasks`` serves
``faults.effect``. Each run counts itself (``RUNS``: task id -> runs); the side
effect (appending the task id to ``EFFECTS``) happens only if the task's
idempotency record did not exist yet, in one atomic step. Delivery is at
least once, so a task may run twice after a crash; its effect must not.
Redis calls are retried through a link cut or a broker restart, as a real
task's would be.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import shared_task

RUNS = "faults:runs"
EFFECTS = "faults:effects"
RETRY_FOR = 60.0

_EFFECT = """
if redis.call('SET', KEYS[1], '1', 'NX') then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def _retrying(call: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + RETRY_FOR
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class FileLedger:
    """Runs and effects in a folder (``FAULTS_DIR``), for volunteers in their own namespaces.

    A volunteer cannot reach the team's Redis, so a task's side effect lives
    outside it, as a real one would: a run appends a line to ``runs.log``;
    the effect is guarded by creating ``done/TASK_ID`` exclusively (atomic on
    one machine), then appends to ``effects.log``.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        (self.folder / "done").mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, line: str) -> None:
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)

    def run(self, task_id: str) -> None:
        self._append("runs.log", task_id)

    def apply(self, task_id: str) -> bool:
        try:
            os.close(os.open(self.folder / "done" / task_id, os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        self._append("effects.log", task_id)
        return True


@shared_task(name="faults.effect", bind=True)
def effect(self, kind: str, amount: float) -> dict:
    task_id = self.request.id
    folder = os.environ.get("FAULTS_DIR")
    if folder:
        ledger = FileLedger(folder)
        ledger.run(task_id)
        _work(kind, amount)
        return {"hostname": self.request.hostname, "kind": kind,
                "applied": ledger.apply(task_id)}
    client = self.app.backend.client
    _retrying(lambda: client.hincrby(RUNS, task_id, 1))
    _work(kind, amount)
    applied = _retrying(lambda: client.eval(_EFFECT, 2, f"faults:done:{task_id}", EFFECTS,
                                            task_id))
    return {"hostname": self.request.hostname, "kind": kind, "applied": bool(applied)}


def _work(kind: str, amount: float) -> None:
    if kind == "sleep":
        time.sleep(amount)
    elif kind == "burn":
        start = time.process_time()
        while time.process_time() - start < amount:
            sum(range(1000))
