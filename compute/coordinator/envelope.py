"""Team messages as the coordinator reads them, and the copy a volunteer gets: pure, no Redis.

A task message in a Redis queue is kombu's JSON envelope: ``headers`` (Celery
protocol 2: ``task``, ``id``, ...), ``properties`` (``delivery_tag``,
``delivery_info``, ``priority``) and a base64 ``body`` holding
``[args, kwargs, embed]``. The volunteer's copy keeps the task, its id and
its arguments (so the team's signature still holds) and drops everything that
would make the volunteer act on the team's behalf: the continuations in
``embed`` (callbacks, errbacks, chain, chord), which the coordinator runs
itself once it accepted the result, and the verification header (the
coordinator decides verified results). It gets a fresh delivery tag, so each
assignment is its own entry in the volunteer's ``unacked`` set.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from compute.verify import HEADER as VERIFY_HEADER

#: kombu's Redis transport: a queue's priority sub-lists are ``NAME + SEP + step``.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
#: What the volunteer's copy of a task never carries.
CONTINUATIONS = ("callbacks", "errbacks", "chain", "chord")


class MalformedMessage(ValueError):
    """A queue item the coordinator cannot read as a Celery task message."""


def priority_lists(queue: str) -> list[str]:
    """The Redis lists of ``queue``, in the order kombu's consumers pop them."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def queue_of_list(name: str) -> str:
    """The queue a Redis list belongs to (its priority suffix removed)."""
    return name.split(PRIORITY_SEP, 1)[0]


@dataclass(frozen=True)
class TeamMessage:
    """One task message as the team sent it."""

    raw: bytes
    task_id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any] = field(repr=False)
    properties: dict[str, Any] = field(repr=False)
    envelope: dict[str, Any] = field(repr=False)

    @property
    def verification(self) -> str | None:
        """The verification id of a replica of a ``verify=k`` task, else None."""
        value = self.headers.get(VERIFY_HEADER)
        return str(value) if value else None

    def context(self) -> dict[str, Any]:
        """What Celery's result backend needs to know of the request (``completion.py``)."""
        return {**self.headers, **self.embed, "id": self.task_id, "task": self.name,
                "args": self.args, "kwargs": self.kwargs,
                "delivery_info": self.properties.get("delivery_info") or {},
                "reply_to": self.properties.get("reply_to"),
                "correlation_id": self.properties.get("correlation_id") or self.task_id}


def _decode_body(envelope: dict[str, Any]) -> Any:
    body = envelope.get("body")
    if envelope.get("content-type") != "application/json":
        raise MalformedMessage(f"content type {envelope.get('content-type')!r}, not JSON")
    if not isinstance(body, str):
        raise MalformedMessage("the body is not text")
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"the body is not base64 UTF-8: {exc}") from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise MalformedMessage(f"the body is not JSON: {exc}") from None


def parse(raw: bytes | str) -> TeamMessage:
    """A team task message from the bytes in a queue; :class:`MalformedMessage` if it is none."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        envelope = json.loads(data)
    except ValueError as exc:
        raise MalformedMessage(f"not a kombu message (not JSON): {exc}") from None
    if not isinstance(envelope, dict):
        raise MalformedMessage("not a kombu message (not an object)")
    headers, properties = envelope.get("headers"), envelope.get("properties")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise MalformedMessage("no headers or properties")
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not isinstance(task_id, str) or not name or not task_id:
        raise MalformedMessage("the task name and id must be text")
    body = _decode_body(envelope)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
            and isinstance(body[1], dict) and (body[2] is None or isinstance(body[2], dict))):
        raise MalformedMessage("the body must be [args, kwargs, embed]")
    return TeamMessage(raw=data, task_id=task_id, name=name, args=body[0], kwargs=body[1],
                       embed=dict(body[2] or {}), headers=headers, properties=properties,
                       envelope=envelope)


def for_volunteer(message: TeamMessage, queue: str) -> tuple[bytes, str]:
    """The volunteer's copy of ``message`` for its queue ``queue``, and its delivery tag."""
    embed = {**message.embed, **dict.fromkeys(CONTINUATIONS)}
    body = json.dumps([message.args, message.kwargs, embed], separators=(",", ":"))
    headers = {key: value for key, value in message.headers.items() if key != VERIFY_HEADER}
    tag = str(uuid.uuid4())
    properties = {**message.properties, "delivery_tag": tag, "body_encoding": "base64",
                  "delivery_info": {"exchange": "", "routing_key": queue}}
    envelope = {**message.envelope, "body": base64.b64encode(body.encode()).decode(),
                "content-type": "application/json", "content-encoding": "utf-8",
                "headers": headers, "properties": properties}
    return json.dumps(envelope, separators=(",", ":")).encode(), tag
