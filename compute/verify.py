"""Verified results (BOINC's quorum): ``task.apply_async(args, verify=k)``.

Sending makes one verification id and ``k`` replica messages of the task with
the same arguments (task ids ``<id>-1`` .. ``<id>-k``), each carrying the
header ``idle_accel_verify``; the record lives in Redis
(:func:`compute.keys.verification`). The caller gets ``AsyncResult(<id>)``:
its value is the agreed result, or it fails with
:class:`~compute.errors.VerificationFailed` naming the hosts that disagreed.

In the worker's pool process (``compute/base.py``), a replica is first
claimed for the worker's machine (its host id, ``compute/hostid.py``) in one
Lua call. A machine that already owns another replica of the same task hands
this one back to the queue after a short pause, so k distinct machines run
the k replicas: BOINC's one-result-per-host rule, enforced when a replica is
taken rather than when it is sent, so any idle volunteer can take it. A
replica whose lease ran out and that was claimed again elsewhere records its
outcome from the new owner only. The worker that records the k-th outcome
decides (``compute/quorum.py``), stores the verdict as the result of ``<id>``,
logs a disagreement with the volunteers involved and adds it to the fleet's
latest verdicts (``idle-accel fleet verdicts``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import states
from celery.exceptions import Ignore, Reject, Retry

from compute import keys
from compute.errors import InvalidArgument, VerificationFailed
from compute.quorum import Outcome, Verdict, adaptive, decide, grouped

log = logging.getLogger(__name__)

#: Message header that marks a replica; its value is the verification id.
HEADER = "idle_accel_verify"
#: Header of an extra replica (adaptive replication): the replica it stands for, when
#: its message is a copy of another replica's (same task id, so the team's signature holds).
REPLICA_HEADER = "idle_accel_replica"
MIN_K, MAX_K = 2, 16
#: How many verdicts ``fleet verdicts`` keeps.
KEEP_VERDICTS = 1000
#: Pause before a machine hands back a replica it may not run (doubling up to the cap).
FIRST_PAUSE, MAX_PAUSE = 0.25, 4.0

# Claim a replica for a machine: 'ok', 'other' (the machine owns another
# replica), 'done' (this replica has its outcome) or 'unknown' (no record).
_CLAIM = """
if redis.call('HEXISTS', KEYS[1], 'k') == 0 then return 'unknown' end
if redis.call('HEXISTS', KEYS[1], 'result:' .. ARGV[1]) == 1 then return 'done' end
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 6) == 'owner:' and fields[i] ~= 'owner:' .. ARGV[1]
     and fields[i + 1] == ARGV[2] then return 'other' end
end
redis.call('HSET', KEYS[1], 'owner:' .. ARGV[1], ARGV[2])
return 'ok'
"""

# Record a replica's outcome while its machine owns it: 'moved', 'duplicate',
# 'recorded', or 'decide' for the one call that completed the k outcomes.
_RECORD = """
if redis.call('HGET', KEYS[1], 'owner:' .. ARGV[1]) ~= ARGV[2] then return 'moved' end
if redis.call('HSETNX', KEYS[1], 'result:' .. ARGV[1], ARGV[3]) == 0 then return 'duplicate' end
local n = 0
local fields = redis.call('HKEYS', KEYS[1])
for i = 1, #fields do
  if string.sub(fields[i], 1, 7) == 'result:' then n = n + 1 end
end
if n >= tonumber(redis.call('HGET', KEYS[1], 'k'))
   and redis.call('HSETNX', KEYS[1], 'deciding', '1') == 1 then return 'decide' end
return 'recorded'
"""

_pauses: dict[str, int] = {}  # replica id -> refusals in this process


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ttl(app: Any) -> int:
    return max(60, int(app.conf.result_expires or 86_400))


def max_replicas(k: int) -> int:
    """How many replicas a verification may use in all (adaptive replication): 2k + 1."""
    return 2 * k + 1


def replica_ids(verification_id: str, k: int) -> list[str]:
    return [f"{verification_id}-{i}" for i in range(1, k + 1)]


def send(app: Any, name: str, args: Any, kwargs: Any, k: Any, tolerance: Any,
         send_one: Callable[..., Any], **options: Any) -> Any:
    """Send task ``name`` to run on ``k`` distinct machines; the verdict's AsyncResult.

    ``send_one(name, args, kwargs, **options)`` sends one message (Celery's own
    ``send_task``); the app calls this for ``verify=k`` (``compute/app.py``).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not MIN_K <= k <= MAX_K:
        raise InvalidArgument(f"{name}: verify must be a whole number of machines from "
                              f"{MIN_K} to {MAX_K}; got {k!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) \
            or not 0 <= tolerance < 1:
        raise InvalidArgument(f"{name}: tolerance must be a relative difference in "
                              f"[0, 1); got {tolerance!r}")
    verification_id = options.pop("task_id", None) or str(uuid.uuid4())
    client = app.backend.client
    key = keys.verification(verification_id)
    ids = replica_ids(verification_id, k)
    pipe = client.pipeline()
    pipe.hset(key, mapping={"task": name, "k": k, "cap": max_replicas(k),
                            "tolerance": repr(float(tolerance)),
                            "created": f"{time.time():.3f}", "replicas": json.dumps(ids)})
    pipe.expire(key, _ttl(app))
    pipe.execute()
    headers = {**(options.pop("headers", None) or {}), HEADER: verification_id}
    for replica in ids:
        send_one(name, args, kwargs, task_id=replica, headers=headers, **options)
    return (options.get("result_cls") or app.AsyncResult)(verification_id)


def claim(client: Any, verification_id: str, replica: str, host: str) -> str:
    return _text(client.eval(_CLAIM, 1, keys.verification(verification_id), replica, host))


def record(client: Any, verification_id: str, outcome: Outcome) -> str:
    payload = json.dumps({"host": outcome.host, "node": outcome.node, "result": outcome.result,
                          "error": outcome.error}, sort_keys=True, separators=(",", ":"))
    return _text(client.eval(_RECORD, 1, keys.verification(verification_id), outcome.replica,
                             outcome.host, payload))


def _outcomes(fields: dict[str, str]) -> list[Outcome]:
    found = []
    for name, value in fields.items():
        if name.startswith("result:"):
            data = json.loads(value)
            found.append(Outcome(replica=name[len("result:"):], host=data["host"],
                                 node=data["node"], result=data["result"], error=data["error"]))
    return sorted(found, key=lambda o: o.replica)


def _fields(client: Any, verification_id: str) -> dict[str, str]:
    raw = client.hgetall(keys.verification(verification_id))
    return {_text(k): _text(v) for k, v in raw.items()}


def _verdict_json(verification_id: str, fields: dict[str, str], verdict: Verdict) -> dict:
    return {"id": verification_id, "task": fields.get("task"), "k": int(fields.get("k", 0)),
            "agreed": verdict.agreed, "summary": verdict.summary(), "decided": time.time(),
            "groups": [[{"replica": o.replica, "host": o.host, "node": o.node,
                         "result": o.result, "error": o.error} for o in group]
                       for group in verdict.groups]}


def conclude(app: Any, verification_id: str) -> Verdict:
    """Decide on the k recorded outcomes and publish the verdict (called once, by one worker)."""
    fields = _fields(app.backend.client, verification_id)
    verdict = decide(_outcomes(fields), int(fields["k"]), float(fields.get("tolerance", 0)))
    return publish(app, verification_id, fields, verdict)


def settle(app: Any, verification_id: str,
           extend: Callable[[list[str]], None] | None = None, *,
           store: bool = True) -> Verdict | None:
    """Decide on the outcomes so far: publish a verdict, or send more replicas.

    With ``extend`` (the coordinator's, which can send a copy of a replica to
    another machine) a disagreement asks for more replicas, up to the record's
    ``cap`` (BOINC's adaptive replication); without it, k outcomes that
    disagree fail the task. None when more replicas were sent. ``store=False``:
    the caller stores the verdict as the task's result itself (the coordinator,
    which also runs the task's continuations from it).
    """
    client = app.backend.client
    fields, outcomes = state(client, verification_id)
    k = int(fields["k"])
    cap = int(fields.get("cap", k)) if extend is not None else len(outcomes)
    found = adaptive(outcomes, k, max(cap, len(outcomes)), float(fields.get("tolerance", 0)))
    if isinstance(found, Verdict):
        return publish(app, verification_id, fields, found, store=store)
    listed = json.loads(fields.get("replicas", "[]"))
    new = [f"{verification_id}-{len(listed) + i}" for i in range(1, found + 1)]
    add_replicas(client, verification_id, new)
    log.warning("verification %s: %s; %d more replica(s) sent", verification_id,
                Verdict(False, groups=grouped(outcomes, float(fields.get("tolerance", 0))))
                .summary(), found)
    assert extend is not None
    extend(new)
    return None


def state(client: Any, verification_id: str) -> tuple[dict[str, str], list[Outcome]]:
    """A verification's record fields and its recorded outcomes."""
    fields = _fields(client, verification_id)
    return fields, _outcomes(fields)


def add_replicas(client: Any, verification_id: str, new: list[str]) -> None:
    """List more replicas (adaptive replication) and let the next outcome decide again."""
    fields = _fields(client, verification_id)
    listed = json.loads(fields.get("replicas", "[]"))
    pipe = client.pipeline()
    pipe.hset(keys.verification(verification_id), "replicas", json.dumps([*listed, *new]))
    pipe.hdel(keys.verification(verification_id), "deciding")
    pipe.execute()


def publish(app: Any, verification_id: str, fields: dict[str, str], verdict: Verdict, *,
            store: bool = True) -> Verdict:
    """Record ``verdict`` in the fleet's latest verdicts and (``store``) as the task's result."""
    client = app.backend.client
    entry = _verdict_json(verification_id, fields, verdict)
    text = json.dumps(entry, separators=(",", ":"))
    pipe = client.pipeline()
    pipe.hset(keys.verification(verification_id), "verdict", text)
    pipe.lpush(keys.VERDICTS, text)
    pipe.ltrim(keys.VERDICTS, 0, KEEP_VERDICTS - 1)
    pipe.execute()
    if not store:
        return verdict
    if verdict.agreed and verdict.error is None:
        app.backend.store_result(verification_id, verdict.value, states.SUCCESS)
    else:
        what = (f"{fields.get('task')} failed the same way on every host: {verdict.error}"
                if verdict.agreed else f"{fields.get('task')}: {verdict.summary()}")
        if not verdict.agreed:
            log.warning("verification %s: %s", verification_id, verdict.summary())
        app.backend.mark_as_failure(verification_id, VerificationFailed(what))
    return verdict


class HandBack(Reject):
    """This machine already ran another replica: the message goes back for another machine.

    It goes back after ``pause`` seconds, which the worker waits without
    holding a pool process or a prefetch slot (``worker/celery_gate.py``), so
    it takes other work meanwhile (the replica another machine refused, say);
    on AMQP it is re-published to the tail of its queue, since RabbitMQ puts a
    requeued message back at the head, where the same worker took it again.
    """

    def __init__(self, reason: str | None = None, requeue: bool = True,
                 pause: float = 0.0) -> None:
        super().__init__(reason, requeue)
        self.pause = pause
        self.args = (reason, requeue, pause)  # crosses the pool's pipe pickled: keep the pause


def _hand_back(replica: str) -> None:
    refusals = _pauses.get(replica, 0)
    _pauses[replica] = refusals + 1
    raise HandBack("this machine already ran another replica of the task", requeue=True,
                   pause=min(MAX_PAUSE, FIRST_PAUSE * 2 ** refusals))


def run_replica(task: Any, verification_id: str, host: str, body: Callable[[], Any]) -> Any:
    """Run one replica of a verified task on this machine (``host``), or hand it back."""
    replica = str(getattr(task.request, REPLICA_HEADER, None) or task.request.id)
    node = task.request.hostname or "?"
    client = task.app.backend.client
    state = claim(client, verification_id, replica, host)
    if state == "other":
        _hand_back(replica)
    _pauses.pop(replica, None)
    if state == "unknown":
        raise VerificationFailed(f"verification {verification_id} has no record in Redis "
                                 "(expired, or not sent with verify=k)")
    if state == "done":
        done = next(o for o in _outcomes(_fields(client, verification_id))
                    if o.replica == replica)
        if done.error is not None:
            raise VerificationFailed(f"replica {replica} already ended: {done.error}")
        return done.result
    try:
        result = body()
    except (Retry, Reject, Ignore):
        raise
    except Exception as exc:
        _settle(task, verification_id, Outcome(replica, host, node,
                                                error=f"{type(exc).__name__}: {exc}"))
        raise
    # The outcome as the result backend will keep it (tuples become lists).
    _settle(task, verification_id, Outcome(replica, host, node, result=json.loads(
        json.dumps(result))))
    return result


def _settle(task: Any, verification_id: str, outcome: Outcome) -> None:
    state = record(task.app.backend.client, verification_id, outcome)
    if state == "decide":
        settle(task.app, verification_id)
    elif state != "recorded":
        log.info("replica %s on %s not counted: %s", outcome.replica, outcome.node, state)


def report(client: Any, verification_id: str) -> dict[str, Any] | None:
    """Where a verified task stands: its replicas' owners and outcomes, and the verdict."""
    fields = _fields(client, verification_id)
    if not fields:
        return None
    ids = json.loads(fields.get("replicas", "[]"))
    outcomes = {o.replica: o for o in _outcomes(fields)}
    return {
        "id": verification_id, "task": fields.get("task"), "k": int(fields.get("k", 0)),
        "replicas": [{"replica": r, "host": fields.get(f"owner:{r}"),
                      "node": outcomes[r].node if r in outcomes else None,
                      "done": r in outcomes} for r in ids],
        "verdict": json.loads(fields["verdict"]) if "verdict" in fields else None,
    }


def verdicts(client: Any, limit: int = 50) -> list[dict[str, Any]]:
    """The latest verdicts, newest first."""
    return [json.loads(_text(v)) for v in client.lrange(keys.VERDICTS, 0, max(0, limit - 1))]
