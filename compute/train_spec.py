"""A training job's spec: every setting, its default and its range, checked in one place.

The spec travels (signed, small) with every task of the job; each task
checks it before anything else, so a malformed one fails that task with a
message naming the setting.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from compute import queues as q
from compute import validate
from compute.diloco import Inner, Outer
from compute.errors import InvalidArgument

#: The queue of the steps only the team's own workers run (starting a round, closing it,
#: the baseline): they write the global weights. Dedicated workers consume it; the
#: coordinator never serves it to volunteers.
TEAM_QUEUE = q.TEAM

#: (default, low, high) of each number; ``None`` default: required.
NUMBERS: dict[str, tuple[Any, float, float]] = {
    "rounds": (10, 1, 10_000),
    "replicas": (2, 1, 256),
    "inner_steps": (50, 1, 100_000),
    "batch_size": (16, 1, 4096),
    "lr": (5e-4, 1e-9, 1.0),  # measured on MiniLM's top layers (docs/benchmarks.md)
    "weight_decay": (0.01, 0.0, 1.0),
    "outer_lr": (0.7, 1e-6, 10.0),      # the paper's
    "outer_momentum": (0.9, 0.0, 0.999),
    "deadline": (3600.0, 1.0, 7 * 86_400.0),
    "checkpoint_every": (10, 1, 100_000),
    "seed": (0, 0, 2**31 - 1),
}
WHOLE = {"rounds", "replicas", "inner_steps", "batch_size", "checkpoint_every", "seed"}
FLAGS = {"nesterov": True, "gpu": False, "baseline": False}
TEXTS = {"model": "minilm-classifier", "dataset": "csv"}
REQUIRED = ("job", "output", "data")
OPTIONAL = ("quorum", "region", "options", "queue")
_JOB = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")  # a UUID: replica_id
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
MAX_OPTIONS = 4096


def _refuse(task: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{task}: argument 'spec': {message}")


def check(spec: Any, task: str = "train") -> dict[str, Any]:
    """The spec with every default filled in, or InvalidArgument naming the setting."""
    if not isinstance(spec, dict):
        raise _refuse(task, f"must be a JSON object; got {validate.shown(spec)}")
    known = {*REQUIRED, *OPTIONAL, *NUMBERS, *FLAGS, *TEXTS}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise _refuse(task, f"unknown settings {unknown[:5]}")
    out: dict[str, Any] = {}
    for name in REQUIRED:
        if name not in spec:
            raise _refuse(task, f"'{name}' is missing")
    if not isinstance(spec["job"], str) or not _JOB.match(spec["job"]):
        raise _refuse(task, f"'job' must be a job id; got {validate.shown(spec['job'])}")
    out["job"] = spec["job"]
    for name in ("output", "data"):
        value = spec[name]
        if (not isinstance(value, str) or not value.startswith("/") or "\0" in value
                or len(value) > validate.MAX_PATH or "://" in value):
            raise _refuse(task, f"'{name}' must be an absolute file path; "
                                f"got {validate.shown(value)}")
        out[name] = value
    for name, (default, low, high) in NUMBERS.items():
        value = spec.get(name, default)
        whole = name in WHOLE
        kind_ok = (isinstance(value, int) if whole else isinstance(value, int | float))
        if (isinstance(value, bool) or not kind_ok or not low <= value <= high
                or not math.isfinite(value)):
            what = "a whole number" if whole else "a number"
            raise _refuse(task, f"'{name}' must be {what} from {low:g} to {high:g}; "
                                f"got {validate.shown(value)}")
        out[name] = value if whole else float(value)
    for name, default in FLAGS.items():
        value = spec.get(name, default)
        if not isinstance(value, bool):
            raise _refuse(task, f"'{name}' must be true or false; got {validate.shown(value)}")
        out[name] = value
    for name, default in TEXTS.items():
        value = spec.get(name, default)
        if not isinstance(value, str) or not _NAME.match(value):
            raise _refuse(task, f"'{name}' must be a registered name; "
                                f"got {validate.shown(value)}")
        out[name] = value
    quorum = spec.get("quorum", out["replicas"])
    if isinstance(quorum, bool) or not isinstance(quorum, int) or \
            not 1 <= quorum <= out["replicas"]:
        raise _refuse(task, f"'quorum' must be a whole number from 1 to the replicas "
                            f"({out['replicas']}); got {validate.shown(quorum)}")
    out["quorum"] = quorum
    region = spec.get("region")
    if region is not None:
        try:
            q.check_region(region if isinstance(region, str) else "")
        except ValueError as exc:
            raise _refuse(task, f"'region': {exc}") from None
    out["region"] = region
    queue = spec.get("queue", TEAM_QUEUE)
    try:
        out["queue"] = q.check_name(queue if isinstance(queue, str) else "")
    except ValueError as exc:
        raise _refuse(task, f"'queue': {exc}") from None
    options = spec.get("options", {})
    if not isinstance(options, dict) or len(json.dumps(options, default=str)) > MAX_OPTIONS:
        raise _refuse(task, f"'options' must be a JSON object of at most {MAX_OPTIONS} "
                            f"bytes; got {validate.shown(options)}")
    out["options"] = options
    _check_betas(task, out)
    return out


def _check_betas(task: str, spec: dict[str, Any]) -> None:
    if spec["lr"] * spec["weight_decay"] >= 1:
        raise _refuse(task, "'lr' times 'weight_decay' must be below 1")


def inner(spec: dict[str, Any]) -> Inner:
    return Inner(lr=spec["lr"], weight_decay=spec["weight_decay"])


def outer(spec: dict[str, Any]) -> Outer:
    return Outer(lr=spec["outer_lr"], momentum=spec["outer_momentum"],
                 nesterov=spec["nesterov"])


def replica_queue(spec: dict[str, Any]) -> str:
    """Where the replicas go: ``gpu`` (or ``cpu``), pinned to the job's region if it has one."""
    name = q.GPU if spec["gpu"] else q.CPU
    return q.regional(name, spec["region"]) if spec["region"] else name
