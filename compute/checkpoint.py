"""Checkpoints: a task saves its progress so a preempted run resumes, not restarts.

A volunteer's owner can come back at any moment; after ``--preempt-after``
the task is ended and requeued, and the next worker that takes it calls
``restore()`` to pick up from the last ``checkpoint(state)`` (HTCondor's
self-checkpointing jobs, BOINC's checkpoint files). State is JSON, kept in
the result backend's Redis under the task id, and expires with results. An
enrolled volunteer keeps it in its own namespace: only it reads it back (a
stranger's intermediate state is never handed to another volunteer).

    @shared_task(bind=True, base=CheckpointTask, name="team.count")
    def count(self, n):
        done = (self.restore() or {}).get("done", 0)
        for i in range(done, n):
            work(i)
            self.checkpoint({"done": i + 1})
        self.clear_checkpoint()
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from compute import keys, namespace
from compute.base import BaseTask
from compute.errors import InvalidArgument

log = logging.getLogger(__name__)

#: A checkpoint is a small progress record, not a data store.
MAX_CHECKPOINT_BYTES = 64 * 1024

#: Redis is unreachable (a link cut, a restart): a checkpoint is an optimisation,
#: so the task goes on; at worst a preempted run redoes more work.
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class CheckpointTask(BaseTask):
    """A Celery task with ``checkpoint(state)``, ``restore()`` and ``clear_checkpoint()``."""

    abstract = True

    def _redis(self) -> Any:
        client = getattr(self.app.backend, "client", None)
        if client is None:
            raise RuntimeError("checkpoints need a Redis result backend")
        return client

    def _key(self) -> str:
        task_id = self.request.id
        if not task_id:
            raise RuntimeError("checkpoints exist only for a task run by a worker")
        return namespace.key(self.app, keys.checkpoint(task_id))

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (JSON-serializable) as this task's progress, replacing the last."""
        try:
            data = json.dumps(state, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"{self.name}: checkpoint state must be JSON: {exc}") from None
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise InvalidArgument(f"{self.name}: checkpoint state is {len(data)} bytes; "
                                  f"at most {MAX_CHECKPOINT_BYTES} allowed")
        try:
            self._redis().set(self._key(), data, ex=int(self.app.conf.result_expires or 86_400))
        except _UNREACHABLE as exc:
            log.warning("%s: checkpoint not saved (Redis unreachable: %s); going on", self.name,
                        exc)

    def restore(self) -> Any | None:
        """The last saved state of this task (from an earlier, preempted run), or None.

        None too when Redis cannot be reached: the task starts over, which is
        slower but right.
        """
        try:
            raw = self._redis().get(self._key())
        except _UNREACHABLE as exc:
            log.warning("%s: checkpoint not read (Redis unreachable: %s); starting over",
                        self.name, exc)
            return None
        return None if raw is None else json.loads(raw)

    def clear_checkpoint(self) -> None:
        """Forget the saved state (call when the task is done; it expires anyway)."""
        try:
            self._redis().delete(self._key())
        except _UNREACHABLE as exc:
            log.warning("%s: checkpoint not cleared (Redis unreachable: %s); it expires",
                        self.name, exc)
