"""The task SDK: teams write plain Celery functions; ``compute_task`` adds routing and guard rails.

    from compute.sdk import Needs, compute_task

    @compute_task("team.upscale", needs=Needs(gpu=True, vram_gb=10))
    def upscale(self, image_path: str) -> dict:
        self.progress(0, 1)
        ...
        return {"path": out}

- ``needs`` routes the task to the queue of workers that can run it: ``gpu``,
  a RAM or VRAM tier (``gpu.vram12``), a region (``cpu@eu-west``); see
  ``compute/queues.py``. ``route(signature, needs)`` re-routes one call.
- ``self.progress(done, total)`` reports progress through the task state
  (``PROGRESS``), which Flower and ``idle-accel job status`` show.
- ``self.checkpoint(state)`` / ``self.restore()``: see ``compute/checkpoint.py``.
- Arguments and results are JSON and small: references (paths, URLs) travel,
  data does not. An argument list or result larger than
  ``IDLE_ACCEL_MAX_MESSAGE_BYTES`` fails with a message saying so, before it
  is sent when the caller has the task, else on the worker.
- :class:`~compute.errors.InvalidArgument` raised by a task ends it as a
  FAILURE with its message; the worker goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Signature, shared_task

from compute import queues as q
from compute.checkpoint import CheckpointTask
from compute.errors import InvalidArgument, PayloadTooLarge

#: Default for ``IDLE_ACCEL_MAX_MESSAGE_BYTES``.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Needs:
    """What a task needs from a worker; decides its queue."""

    gpu: bool = False
    ram_gb: float = 0.0
    vram_gb: float = 0.0
    region: str | None = None

    def __post_init__(self) -> None:
        if self.vram_gb and not self.gpu:
            raise ValueError("vram_gb needs gpu=True")
        if self.region is not None:
            q.check_region(self.region)

    def queue(self) -> str:
        if self.gpu:
            name = q.tier(q.GPU, "vram", self.vram_gb, q.VRAM_TIERS)
        else:
            name = q.tier(q.CPU, "ram", self.ram_gb, q.RAM_TIERS)
        return q.regional(name, self.region) if self.region else name


def max_message_bytes(app: Any) -> int:
    settings = getattr(app, "idle_accel_settings", None)
    if settings is not None:
        return int(settings.max_message_bytes)
    return int(os.environ.get("IDLE_ACCEL_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES))


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def check_size(task: str, what: str, value: Any, limit: int) -> None:
    size = _size(value)
    if size > limit:
        raise PayloadTooLarge(
            f"{task}: {what} is {size} bytes as JSON, over the {limit}-byte message limit "
            "(IDLE_ACCEL_MAX_MESSAGE_BYTES): pass a path or URL to the data instead")


class ComputeTask(CheckpointTask):
    """Base of every SDK task: progress, checkpoints and message size limits."""

    abstract = True
    throws = (InvalidArgument,)
    needs_queue: str | None = None  # set by compute_task; see route_by_needs

    def progress(self, done: int, total: int, **info: Any) -> None:
        """Report ``done`` of ``total`` steps (task state ``PROGRESS``)."""
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta={
                "done": done, "total": total, "hostname": self.request.hostname, **info})

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        check_size(self.name, "arguments", [args or (), kwargs or {}],
                   max_message_bytes(self.app))
        return super().apply_async(args, kwargs, **options)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        limit = max_message_bytes(self.app)
        check_size(self.name, "arguments", [args, kwargs], limit)
        result = super().__call__(*args, **kwargs)
        check_size(self.name, "the result", result, limit)
        return result


def task_threads() -> int:
    """CPU threads one task may use: the machine's cores shared by the pool's processes.

    ``idle-accel worker`` sets ``IDLE_ACCEL_TASK_THREADS``; engines (torch,
    Cycles) follow it, so two pool processes on two cores do not fight over them.
    """
    try:
        return max(1, int(os.environ["IDLE_ACCEL_TASK_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def compute_task(name: str, *, needs: Needs | None = None,
                 **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@compute_task("team.name", needs=Needs(...))``: a bound Celery task on its queue."""
    queue = (needs or Needs()).queue()

    def register(function: Callable[..., Any]) -> Any:
        return shared_task(name=name, bind=True, base=ComputeTask, needs_queue=queue,
                           **options)(function)

    return register


def route_by_needs(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
                   **_: Any) -> dict[str, str] | None:
    """Celery router (``task_routes``): an SDK task goes to the queue its needs chose."""
    queue = getattr(task, "needs_queue", None)
    return {"queue": queue} if queue else None


def route(signature: Signature, needs: Needs) -> Signature:
    """``signature`` sent to the queue ``needs`` asks for (one call, not the task's default)."""
    return signature.set(queue=needs.queue())
