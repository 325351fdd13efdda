"""The trusted side of a task: the team's result and its continuations (Celery, pinned 5.7).

The only file of the coordinator that touches Celery's internals. A volunteer
runs a task without its continuations (``envelope.for_volunteer``); once the
coordinator accepts the volunteer's outcome it does here what Celery's worker
would have done after the task: store the result under the team's task id,
count a chord part, send links and the chain's next step (on success), or
fail the chain and call the errbacks (on failure), all with the team's app,
so jobs, chords and chains work unchanged and are signed as the team's.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from celery import signature, states
from celery.app.task import Context
from kombu.serialization import loads

from compute.coordinator.envelope import TeamMessage
from compute.errors import TaskFailedRemotely

#: Modules whose exception types a volunteer's failure may be rebuilt as; anything
#: else becomes ``TaskFailedRemotely("Type: message")``.
REBUILDABLE = ("builtins", "compute.errors", "compute.signing", "celery.exceptions",
               "billiard.exceptions")


def decode_meta(raw: bytes) -> Any:
    """A result record as the volunteer's worker stored it (JSON only)."""
    return loads(raw, "application/json", "utf-8", accept={"application/json"})


def rebuild_error(exc: Any) -> BaseException:
    """The exception a failure record describes, of an allowed type, else TaskFailedRemotely."""
    if not isinstance(exc, dict):
        return TaskFailedRemotely(f"failed: {str(exc)[:500]}")
    kind, module = str(exc.get("exc_type") or "Error")[:100], exc.get("exc_module")
    message = exc.get("exc_message")
    args = tuple(message) if isinstance(message, list) else (message,)
    args = tuple(a for a in args if isinstance(a, str | int | float | bool | type(None)))
    if module in REBUILDABLE and kind.isidentifier():
        cls = getattr(importlib.import_module(module), kind, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            with contextlib.suppress(Exception):  # a class that wants other arguments
                return cls(*args)
    text = " ".join(str(a) for a in args)[:2000]
    return TaskFailedRemotely(f"{kind}: {text}")


def _request(message: TeamMessage, node: str) -> Context:
    context = Context(message.context())
    context.hostname = node
    context.called_directly = False
    return context


def succeed(app: Any, message: TeamMessage, value: Any, node: str) -> None:
    """Send ``message``'s links and next chain step, then store ``value`` as the team's result
    (with those as its children) and count its chord part: Celery's worker's order."""
    request = _request(message, node)
    root = request.root_id or message.task_id
    priority = (message.properties or {}).get("priority")
    children = []
    for callback in request.callbacks or []:
        children.append(signature(callback, app=app).apply_async(
            (value,), parent_id=message.task_id, root_id=root, priority=priority))
    chain = list(request.chain or [])
    if chain:
        children.append(signature(chain[-1], app=app).apply_async(
            (value,), chain=chain[:-1], parent_id=message.task_id, root_id=root,
            priority=priority))
    request.children.extend(children)
    app.backend.mark_as_done(message.task_id, value, request=request)


def fail(app: Any, message: TeamMessage, exc: BaseException, node: str) -> None:
    """Store ``exc`` as the team's result of ``message``; its chord, chain and errbacks learn."""
    app.backend.mark_as_failure(message.task_id, exc, traceback=None,
                                request=_request(message, node))


def started(app: Any, message: TeamMessage, node: str) -> None:
    """Store STARTED for the team (``task_track_started``), as Celery's worker does."""
    app.backend.store_result(message.task_id, {"hostname": node}, states.STARTED,
                             request=_request(message, node))


def team_state(app: Any, task_id: str) -> str | None:
    """The state the team's result backend holds for ``task_id`` (None when it holds none)."""
    meta = app.backend.get_task_meta(task_id, cache=False)
    state = meta.get("status") if isinstance(meta, dict) else None
    return None if state in (None, "PENDING") else str(state)
