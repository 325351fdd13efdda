"""Jobs: split -> many small tasks -> assemble, as a Celery chord, with a record to follow it.

Small tasks make suspension and preemption cheap: a volunteer whose owner
comes back holds one small piece, not the whole job. A job is a chord of
``parts`` whose results go, in order, to one ``assemble`` task. Its record
(``compute.keys.job``) keeps the part and assemble task ids, so
``idle-accel job status ID`` can count what is done and who did it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from celery import Celery, Signature, chord

from compute import keys
from compute.errors import JobError

#: The assemble task receives every part's (small) result in one message:
#: beyond this many parts that message outgrows the limit. Use bigger parts.
MAX_PARTS = 1000


@dataclass
class Job:
    id: str
    kind: str
    parts: list[str]
    assemble: str
    created: float
    details: dict[str, Any] = field(default_factory=dict)


def submit(app: Celery, kind: str, parts: list[Signature], assemble: Signature,
           details: dict[str, Any] | None = None, *, max_parts: int = MAX_PARTS) -> Job:
    """Send ``parts`` and, once all succeeded, ``assemble`` with their results in order.

    ``max_parts``: a job whose parts return small references may have more."""
    if not parts:
        raise JobError(f"{kind}: nothing to do (the job has no parts)")
    if len(parts) > max_parts:
        raise JobError(f"{kind}: {len(parts)} parts is more than {max_parts} for one job; "
                       "make each part bigger")
    result = chord(parts)(assemble)
    job = Job(id=result.id, kind=kind, parts=[part.id for part in result.parent.results],
              assemble=result.id, created=time.time(), details=details or {})
    record(app, job)
    return job


def record(app: Celery, job: Job) -> None:
    """Store ``job``'s record (it expires with the results)."""
    app.backend.client.set(keys.job(job.id), json.dumps(asdict(job)),
                           ex=int(app.conf.result_expires or 86_400))


def update(app: Celery, job_id: str, **details: Any) -> None:
    """Merge ``details`` into a job's record (a long job's progress: a training round).

    Nothing when the record is gone (expired, or a step run outside a job)."""
    try:
        job = load(app, job_id)
    except JobError:
        return
    job.details.update(details)
    record(app, job)


def load(app: Celery, job_id: str) -> Job:
    raw = app.backend.client.get(keys.job(job_id))
    if raw is None:
        raise JobError(f"no job {job_id!r}: unknown, or expired with its results")
    return Job(**json.loads(raw))


def status(app: Celery, job: Job) -> dict[str, Any]:
    """Counts of part states, the workers that ran parts, progress, and the assembled result."""
    states: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    failures = []
    for part_id in job.parts:
        result = app.AsyncResult(part_id)
        state = result.state
        states[state] += 1
        info = result.info if isinstance(result.info, dict) else {}
        if state == "SUCCESS" and info.get("hostname"):
            workers[info["hostname"]] += 1
        elif state == "FAILURE":
            failures.append({"task": part_id, "error": str(result.info)})
    final = app.AsyncResult(job.assemble)
    done = final.state == "SUCCESS"
    return {
        "id": job.id, "kind": job.kind, "total": len(job.parts),
        "done": states.get("SUCCESS", 0), "states": dict(states),
        "workers": dict(workers), "failures": failures[:10],
        "state": final.state if final.state != "PENDING" or not states else
        ("FAILURE" if failures else "RUNNING"),
        "result": final.result if done else None,
        "error": str(final.result) if final.state == "FAILURE" else None,
        "details": job.details,
    }
