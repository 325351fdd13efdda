"""Test only: tasks for the signed-task suite (tests/integration/test_signing.py).

A worker started with ``--include tests.integration.signing_tasks`` serves:

- ``signing.touch(path, *rest)``: a visible side effect, it writes ``path``.
  An attacker who could run it on an honest worker would leave that file. Not
  bound and taking ``*rest``: as an errback it is "old-style", called directly
  in the worker's process with ``(request, exc, traceback)``, as
  ``celery.starmap`` is.
- ``signing.spy(*args, **kwargs)``: records, under ``SPY`` (task id -> JSON),
  the arguments it ran with and the continuations its request carried, then
  returns its arguments. ``signing.fail`` does the same and then raises.
  Both are bound: as errbacks they are sent on as messages (with the failed
  task's id first), not called directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from celery import shared_task

SPY = "signing:spy"


@shared_task(name="signing.touch")
def touch(path: str, *rest: Any) -> str:
    Path(path).write_text(json.dumps(list(rest), default=repr))
    return path


def _record(task: Any, args: tuple, kwargs: dict) -> None:
    request = task.request
    seen = {"args": list(args), "kwargs": kwargs, "callbacks": request.callbacks,
            "errbacks": request.errbacks, "chain": request.chain, "chord": request.chord,
            "group": request.group, "group_index": request.group_index}
    task.app.backend.client.hset(SPY, request.id, json.dumps(seen, default=repr))


@shared_task(name="signing.spy", bind=True)
def spy(self: Any, *args: Any, **kwargs: Any) -> list:
    _record(self, args, kwargs)
    return list(args)


@shared_task(name="signing.fail", bind=True)
def fail(self: Any, *args: Any, **kwargs: Any) -> None:
    _record(self, args, kwargs)
    raise ValueError(f"signing.fail{args!r}: fails, as it always does")
