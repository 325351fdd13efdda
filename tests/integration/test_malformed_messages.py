"""Raw malformed messages pushed straight into Redis: refused, logged, never run, never back.

A real ``idle-accel worker`` consumes queue ``cpu``. Each test LPUSHes one
forged item into the ``cpu`` list between two valid tasks sent by a client
app, in kombu's Redis envelope (``envelope()``, checked against what Celery
itself publishes in ``test_the_forged_envelope_is_what_celery_publishes``).
For each bad message the test asserts that it is refused (its task never
runs: a pickled payload whose loading would create a folder leaves none),
that the worker log names the problem, that the worker stays up and runs
the valid task after it, and that the message is gone for good: the ``cpu``
list and kombu's ``unacked`` hash are empty at the end, so nothing is left
to redeliver.

What Celery 5.7 / kombu 5.7 do today (measured):

- body that is not JSON: "Can't decode message body", acknowledged;
- content type other than JSON (XML, YAML, pickle): "Refusing to deserialize
  untrusted content", rejected without loading it (``accept_content``);
- no headers, or headers without a task name: "Received and deleted unknown
  message", rejected;
- unknown task name: "Received unregistered task", rejected, NotRegistered stored;
- arguments over ``IDLE_ACCEL_MAX_MESSAGE_BYTES`` to an SDK task: the task
  refuses them before its code runs (PayloadTooLarge stored and logged).

Handled by the project's guard (``worker/celery_gate.py``), where stock Celery
and kombu failed (measured before the guard):

- arguments over the limit to any other task (a diagnostic task was executed):
  refused before decoding, PayloadTooLarge stored;
- an item that is not a kombu envelope, or whose body is not valid base64
  (kombu raised while parsing it and the worker exited, "Unrecoverable error"):
  logged and dropped;
- a JSON body that is not ``[args, kwargs, embed]`` (Celery's strategy raised,
  the worker exited and the message went back to kill the next worker) and
  headers without a task id (the consumer restarted in a loop): refused.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .waiting import wait_for

TIMEOUT = 30
#: The worker's IDLE_ACCEL_MAX_MESSAGE_BYTES in these tests.
LIMIT = 4096
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_headers(task: str | None, task_id: str | None) -> dict[str, Any]:
    """Protocol 2 headers of a task message (``task`` or ``id`` left out when None)."""
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "argsrepr": "",
               "kwargsrepr": "", "origin": "forged@test"}
    return {key: value for key, value in headers.items()
            if not (key in ("task", "id") and value is None)}


def task_body(args: list[Any], kwargs: dict[str, Any] | None = None) -> bytes:
    return json.dumps([args, kwargs or {}, EMBED]).encode()


def envelope(body: bytes, headers: Any, *, content_type: str = "application/json",
             content_encoding: str = "utf-8", raw_body: str | None = None) -> str:
    """One item of a kombu Redis queue list: the message, its body in base64."""
    return json.dumps({
        "body": base64.b64encode(body).decode() if raw_body is None else raw_body,
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            "correlation_id": headers.get("id") if isinstance(headers, dict) else None,
            "reply_to": None, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "cpu"},
            "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    })


class MakesAFolder:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@dataclass
class Case:
    """One forged message and what must become of it."""

    item: Callable[[Path], str]  # the raw list item, given a folder for markers
    logged: str  # what the worker log must say about it
    task_id: str | None = None  # the id it carries, if any
    stored: str | None = None  # the exception stored as its result; None: nothing stored


def noop(task_id: str, **changes: Any) -> Callable[[Path], str]:
    return lambda _: envelope(task_body([]), task_headers("compute.diag.noop", task_id),
                              **changes)


def pickled(tmp: Path) -> str:
    payload = pickle.dumps(((MakesAFolder(tmp / "pickle-was-loaded"),), {}, EMBED))
    return envelope(payload, task_headers("compute.diag.noop", "raw-pickle"),
                    content_type="application/x-python-serialize", content_encoding="binary")


BIG_PARTS = [{"frame": i, "path": f"/frames/{i:06d}.png", "hostname": "h"} for i in range(200)]

CASES = {
    "body_not_json": Case(
        lambda _: envelope(b"{not json", task_headers("compute.diag.noop", "raw-bad-json")),
        "Can't decode message body", "raw-bad-json"),
    "content_type_xml": Case(
        lambda _: envelope(b"<noop/>", task_headers("compute.diag.noop", "raw-xml"),
                           content_type="application/xml"),
        "Refusing to deserialize untrusted content of type application/xml", "raw-xml"),
    "content_type_yaml": Case(
        lambda _: envelope(b"[[], {}, {}]", task_headers("compute.diag.noop", "raw-yaml"),
                           content_type="application/x-yaml"),
        "Refusing to deserialize untrusted content of type yaml", "raw-yaml"),
    "pickle": Case(pickled, "Refusing to deserialize untrusted content of type pickle",
                   "raw-pickle"),
    "no_headers": Case(lambda _: envelope(task_body([]), {}),
                       "Received and deleted unknown message"),
    "no_task_name": Case(lambda _: envelope(task_body([]), task_headers(None, "raw-no-name")),
                         "Received and deleted unknown message", "raw-no-name"),
    "unknown_task": Case(
        lambda _: envelope(task_body([]), task_headers("team.not_a_task", "raw-unknown")),
        "Received unregistered task of type 'team.not_a_task'", "raw-unknown", "NotRegistered"),
    "oversized_sdk_task": Case(
        lambda _: envelope(task_body([BIG_PARTS]),
                           task_headers("compute.render.collect_frames", "raw-big-sdk")),
        f"over the {LIMIT}-byte message limit", "raw-big-sdk", "PayloadTooLarge"),
    "oversized_diag_task": Case(
        lambda _: envelope(task_body(["x" * 10_000]),
                           task_headers("compute.diag.checksum", "raw-big-diag")),
        f"over the {LIMIT}-byte message limit", "raw-big-diag", "PayloadTooLarge"),
    "not_an_envelope": Case(
        lambda _: "this is not a kombu message", "malformed message"),
    "body_not_base64": Case(
        noop("raw-b64", raw_body="!!not base64$$"), "malformed message", "raw-b64"),
    "body_not_a_task": Case(
        lambda _: envelope(b"5", task_headers("compute.diag.noop", "raw-shape")),
        "malformed message", "raw-shape"),
    "no_task_id": Case(
        lambda _: envelope(task_body([]), task_headers("compute.diag.noop", None)),
        "malformed message"),
}


def test_the_forged_envelope_is_what_celery_publishes(app, broker):
    sent = app.send_task("compute.diag.sleep", args=[0.5], queue="cpu")  # no worker: it stays

    with broker.client() as client:
        [item] = client.lrange("cpu", 0, -1)
    real = json.loads(item)
    forged = json.loads(envelope(task_body([0.5]), task_headers("compute.diag.sleep", sent.id)))

    assert set(forged) == set(real)
    assert set(forged["properties"]) == set(real["properties"])
    assert set(forged["headers"]) <= set(real["headers"])
    assert {k: real["headers"][k] for k in ("task", "id", "lang")} == {
        k: forged["headers"][k] for k in ("task", "id", "lang")}
    assert json.loads(base64.b64decode(real["body"])) == [[0.5], {}, EMBED]
    assert (real["content-type"], real["content-encoding"]) == ("application/json", "utf-8")


def test_a_forged_valid_message_runs(app, workers, broker):
    worker = workers("raw-a", "--concurrency", "1", "--queues", "cpu")

    with broker.client() as client:
        client.lpush("cpu", envelope(task_body([]), task_headers("compute.diag.noop", "ok-1")))

    assert app.AsyncResult("ok-1").get(timeout=TIMEOUT) == {"hostname": worker.node}


@dataclass
class Seen:
    """What became of a forged message sent between two valid tasks (plain values only:
    no AsyncResult outlives the helper, so none is torn down after Redis stopped)."""

    before: Any
    after: Any  # the valid task's result, or None if it did not run
    state: str | None  # the forged message's task state, if it carries an id
    error: str | None  # the type of the exception stored as its result


def between_two_tasks(app: Any, broker: Any, worker: Any, item: str,
                      task_id: str | None) -> Seen:
    noop = app.signature("compute.diag.noop")
    before = noop.delay()
    with broker.client() as client:
        client.lpush("cpu", item)  # kombu LPUSHes and BRPOPs: a FIFO
    after = noop.delay()
    with contextlib.suppress(AssertionError):  # a timeout is judged from what was seen
        wait_for(lambda: after.ready() or not worker.alive
                 or "Connection to broker lost" in worker.log_text(),
                 timeout=TIMEOUT, what="the valid task after the bad one done")
    forged = app.AsyncResult(task_id) if task_id else None
    return Seen(before.get(timeout=1) if before.ready() else None,
                after.get(timeout=1) if after.ready() else None,
                forged.state if forged else None,
                type(forged.result).__name__ if forged and forged.failed() else None)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_malformed_message_is_refused_logged_and_gone(app, workers, broker, tmp_path, case):
    worker = workers("raw-a", "--concurrency", "1", "--queues", "cpu",
                     env={"IDLE_ACCEL_MAX_MESSAGE_BYTES": str(LIMIT)})

    seen = between_two_tasks(app, broker, worker, case.item(tmp_path), case.task_id)

    assert worker.alive, "the worker exited"
    assert seen.after == {"hostname": worker.node}, "the valid task after it did not run"
    assert seen.before == {"hostname": worker.node}
    assert case.logged.lower() in worker.log_text().lower()
    assert not (tmp_path / "pickle-was-loaded").exists()
    if case.stored:
        assert (seen.state, seen.error) == ("FAILURE", case.stored)
    elif case.task_id:
        assert seen.state == "PENDING"  # never ran, nothing stored
    with broker.client() as client:
        assert client.llen("cpu") == 0
        # acks_late: the last ack lands just after the last result is stored
        wait_for(lambda: client.hlen("unacked") == 0, what="nothing left unacknowledged")
        assert client.zcard("unacked_index") == 0
    assert "Connection to broker lost" not in worker.log_text()  # no consumer restart
