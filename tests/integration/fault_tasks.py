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

import time
from collections.abc import Callable
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


@shared_task(name="faults.effect", bind=True)
def effect(self, kind: str, amount: float) -> dict:
    client = self.app.backend.client
    task_id = self.request.id
    _retrying(lambda: client.hincrby(RUNS, task_id, 1))
    if kind == "sleep":
        time.sleep(amount)
    elif kind == "burn":
        start = time.process_time()
        while time.process_time() - start < amount:
            sum(range(1000))
    applied = _retrying(lambda: client.eval(_EFFECT, 2, f"faults:done:{task_id}", EFFECTS,
                                            task_id))
    return {"hostname": self.request.hostname, "kind": kind, "applied": bool(applied)}
