"""Assignments: which volunteer holds which task, until when; every change one fenced Lua call.

The state machine of one task through the coordinator (BOINC's scheduler and
transitioner, on Redis):

    team queue --take--> inbox --place--> assigned (in vol:NAME:QUEUE)
    assigned --void--> team queue (front): late, lost, swallowed, owner busy, revoked
    assigned --completing--> (team result stored, continuations sent) --finish--> gone

``take`` is an atomic ``LMOVE`` from a team list into the coordinator's inbox
for that list, so a coordinator killed at any point loses nothing: what sits
in an inbox goes back to its list on the next start (:func:`recover_inboxes`),
and an assignment marked ``completing`` is completed again, idempotently.
Every other step checks the active coordinator's lock token first
(``fenced``): a coordinator that lost its lock (frozen, cut off) can no longer
change anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from compute import keys
from compute.coordinator.envelope import queue_of_list
from worker import credit as credits

#: Sentinel for "the lock is no longer ours".
FENCED = "fenced"

_FENCE = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end\n"
# A volunteer can turn any key of its namespace into any type: every command on one
# of its keys is guarded (a script that errors halfway keeps its earlier writes).
_GUARDS = """
local function is(key, kind)
  local found = redis.call('TYPE', key).ok
  return found == kind or found == 'none'
end
"""

# KEYS: lock, inbox, assignment, ASSIGNMENTS, assigned(volunteer), volunteer's list,
#       volunteer's result key.  ARGV: token, raw, member, task id, deadline, volunteer
#       message, then the assignment's fields as name, value pairs.
_PLACE = _FENCE + _GUARDS + """
if not is(KEYS[6], 'list') then return 'garbage' end
if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then return 'gone' end
redis.call('DEL', KEYS[3], KEYS[7])
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('LPUSH', KEYS[6], ARGV[6])
return 'ok'
"""
# A regional coordinator's: the message waits on the team's Redis, recorded as out in its
# region (``regions.Outbox``), not in an inbox here; everything else is the same.
_PLACE_REGIONAL = _PLACE.replace(
    "if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then return 'gone' end\n", "")

# KEYS: lock, assignment, ASSIGNMENTS, assigned(volunteer), team list, volunteer's list,
#       volunteer's unacked, unacked_index, result key.
# ARGV: token, member, task id, delivery tag, volunteer message, requeue (1/0), and the
#       message to requeue instead of the stored one ('' for the stored one).
_VOID = _FENCE + _GUARDS + """
local message = redis.call('HGET', KEYS[2], 'message')
if not message then return 'gone' end
if ARGV[7] ~= '' then message = ARGV[7] end
if redis.call('HGET', KEYS[2], 'state') == 'completing' then return 'completing' end
if ARGV[6] == '1' then redis.call('RPUSH', KEYS[5], message) end
redis.call('DEL', KEYS[2], KEYS[9])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[3])
local removed = 0
if is(KEYS[6], 'list') then removed = redis.call('LREM', KEYS[6], 0, ARGV[5]) end
if is(KEYS[7], 'hash') then redis.call('HDEL', KEYS[7], ARGV[4]) end
if is(KEYS[8], 'zset') then redis.call('ZREM', KEYS[8], ARGV[4]) end
if removed > 0 then return 'unstarted' end
return 'ok'
"""

# KEYS: lock, assignment.  ARGV: token, outcome (JSON).
_COMPLETING = _FENCE + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 'gone' end
if redis.call('HGET', KEYS[2], 'state') == 'completing' then return 'again' end
redis.call('HSET', KEYS[2], 'state', 'completing', 'outcome', ARGV[2])
return 'ok'
"""

# KEYS: lock, assignment, ASSIGNMENTS, assigned(volunteer), volunteer's unacked,
#       unacked_index, result key, claim key, credit key, credited marker.
# ARGV: token, member, task id, delivery tag, cpu, gpu, now, ttl (credit when cpu ~= '').
_FINISH = _FENCE + _GUARDS + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 'gone' end
redis.call('DEL', KEYS[2], KEYS[7], KEYS[8])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[3])
if is(KEYS[5], 'hash') then redis.call('HDEL', KEYS[5], ARGV[4]) end
if is(KEYS[6], 'zset') then redis.call('ZREM', KEYS[6], ARGV[4]) end
if ARGV[5] ~= '' and redis.call('SET', KEYS[10], '1', 'NX', 'EX', ARGV[8]) then
  redis.call('HINCRBY', KEYS[9], 'tasks', 1)
  redis.call('HINCRBYFLOAT', KEYS[9], 'cpu_seconds', ARGV[5])
  redis.call('HINCRBYFLOAT', KEYS[9], 'gpu_seconds', ARGV[6])
  redis.call('HSET', KEYS[9], 'last', ARGV[7])
end
return 'ok'
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def inbox(team_list: str) -> str:
    return f"{keys.COORDINATOR_INBOX}:{team_list}"


@dataclass(frozen=True)
class Assignment:
    """One open assignment, as stored (``compute.keys.assignment``)."""

    volunteer: str
    task_id: str
    name: str
    source: str  # the team list it came from (and goes back to)
    queue: str  # the volunteer's queue it was placed in
    message: bytes  # the team's message, unchanged
    vmessage: bytes  # the volunteer's copy
    tag: str  # the volunteer copy's delivery tag
    assigned: float
    deadline: float
    state: str = "placed"
    replica: str = ""  # a verified task's replica this assignment stands for
    verification: str = ""
    outcome: str = ""

    @property
    def member(self) -> str:
        return f"{self.volunteer}/{self.task_id}"

    @property
    def ns(self) -> str:
        return f"vol:{self.volunteer}:"

    def result_key(self) -> str:
        return f"{self.ns}celery-task-meta-{self.task_id}"

    def claim_key(self) -> str:
        return self.ns + keys.credited(self.task_id)

    @classmethod
    def from_hash(cls, fields: dict[Any, Any]) -> Assignment:
        data = {_text(k): v for k, v in fields.items()}
        text = {k: _text(v) for k, v in data.items() if k not in ("message", "vmessage")}
        return cls(volunteer=text["volunteer"], task_id=text["task_id"], name=text["name"],
                   source=text["source"], queue=text["queue"], message=bytes(data["message"]),
                   vmessage=bytes(data["vmessage"]), tag=text["tag"],
                   assigned=float(text["assigned"]), deadline=float(text["deadline"]),
                   state=text.get("state", "placed"), replica=text.get("replica", ""),
                   verification=text.get("verification", ""), outcome=text.get("outcome", ""))


class Ledger:
    """The assignments in Redis, changed only by the coordinator holding ``token``."""

    def __init__(self, client: Any, token: str, outbox: Any = None) -> None:
        """``outbox``: a regional coordinator's records on the team's Redis
        (``regions.Outbox``); team messages are taken from and go back there."""
        self.client = client
        self.token = token
        self.outbox = outbox
        self._place = client.register_script(_PLACE if outbox is None else _PLACE_REGIONAL)
        self._void = client.register_script(_VOID)
        self._completing = client.register_script(_COMPLETING)
        self._finish = client.register_script(_FINISH)
        self.used: set[str] = set()  # team lists taken from: their inboxes can be checked

    # -- taking and placing -------------------------------------------------------------------

    def take(self, team_list: str) -> bytes | None:
        """Move the next message of ``team_list`` into its inbox (atomic); None when empty."""
        if self.outbox is not None:
            return self.outbox.take(team_list)
        self.used.add(team_list)
        return self.client.lmove(team_list, inbox(team_list), "RIGHT", "LEFT")

    def untake(self, team_list: str, raw: bytes) -> None:
        """Put a taken message back at the front of its list (nobody could take it)."""
        if self.outbox is not None:
            self.outbox.release(team_list, raw)
            return
        pipe = self.client.pipeline()
        pipe.lrem(inbox(team_list), 1, raw)
        pipe.rpush(team_list, raw)
        pipe.execute()

    def drop(self, team_list: str, raw: bytes) -> None:
        """Forget a taken message for good (malformed, or failed without running)."""
        if self.outbox is not None:
            self.outbox.done(raw)
            return
        self.client.lrem(inbox(team_list), 1, raw)

    def place(self, a: Assignment) -> str:
        """Record ``a`` and push its volunteer copy, in one step: 'ok', 'gone', 'fenced', or
        'garbage' (the volunteer made its queue something else than a list)."""
        fields = {"volunteer": a.volunteer, "task_id": a.task_id, "name": a.name,
                  "source": a.source, "queue": a.queue, "message": a.message,
                  "vmessage": a.vmessage, "tag": a.tag, "assigned": repr(a.assigned),
                  "deadline": repr(a.deadline), "state": "placed", "replica": a.replica,
                  "verification": a.verification}
        flat = [item for pair in fields.items() for item in pair]
        return _text(self._place(
            keys=[keys.COORDINATOR_LOCK, inbox(a.source), keys.assignment(a.volunteer, a.task_id),
                  keys.ASSIGNMENTS, keys.assigned(a.volunteer), a.ns + a.queue, a.result_key()],
            args=[self.token, a.message, a.member, a.task_id, repr(a.deadline), a.vmessage,
                  *flat]))

    def recover_inboxes(self) -> int:
        """Put back every message a stopped coordinator had taken but not placed."""
        if self.outbox is not None:  # see regions.Outbox.reconcile (needs the loaded ledger)
            return 0
        moved = 0
        for name in list(self.client.scan_iter(match=f"{keys.COORDINATOR_INBOX}:*", count=500)):
            team_list = _text(name)[len(keys.COORDINATOR_INBOX) + 1:]
            while self.client.lmove(name, team_list, "LEFT", "RIGHT") is not None:
                moved += 1
        return moved

    def recover_stray(self) -> int:
        """Put back what sits in an inbox between two steps (each step empties the inbox it
        used): a take whose place never happened because Redis failed between the two, or
        a failover whose promoted replica has the take and not the place. Cheap: one LLEN
        per team list this coordinator has taken from."""
        if self.outbox is not None or not self.used:
            return 0
        names = sorted(self.used)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(inbox(name))
        moved = 0
        for name, length in zip(names, pipe.execute(), strict=True):
            while length and self.client.lmove(inbox(name), name, "LEFT", "RIGHT") is not None:
                moved += 1
        return moved

    # -- reading ------------------------------------------------------------------------------

    def of(self, volunteer: str) -> list[str]:
        return sorted(_text(t) for t in self.client.smembers(keys.assigned(volunteer)))

    def load(self, members: list[str]) -> list[Assignment]:
        """The assignments named ``VOLUNTEER/TASK_ID`` that still exist."""
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            volunteer, task_id = member.split("/", 1)
            pipe.hgetall(keys.assignment(volunteer, task_id))
        found = []
        for fields in pipe.execute():
            if fields:
                try:
                    found.append(Assignment.from_hash(fields))
                except (KeyError, ValueError):
                    continue
        return found

    def all_members(self) -> list[str]:
        return [_text(m) for m in self.client.zrange(keys.ASSIGNMENTS, 0, -1)]

    def count(self) -> int:
        return int(self.client.zcard(keys.ASSIGNMENTS))

    # -- ending -------------------------------------------------------------------------------

    def void(self, a: Assignment, *, requeue: bool = True, instead: bytes = b"") -> str:
        """End ``a`` without a result; its team message goes back to the front of its list.

        'ok', 'unstarted' (it was still waiting in the volunteer's queue), 'gone'
        (already ended), 'completing' (its result is being stored) or 'fenced'.
        ``instead``: requeue this message in place of the stored one (it carries
        which volunteers the task already failed on).
        """
        ns = a.ns
        here = requeue and self.outbox is None  # a region's team list is on the team's Redis
        outcome = _text(self._void(
            keys=[keys.COORDINATOR_LOCK, keys.assignment(a.volunteer, a.task_id),
                  keys.ASSIGNMENTS, keys.assigned(a.volunteer), a.source, ns + a.queue,
                  ns + keys.UNACKED, ns + keys.UNACKED_INDEX, a.result_key()],
            args=[self.token, a.member, a.task_id, a.tag, a.vmessage, "1" if here else "0",
                  instead]))
        if self.outbox is not None and outcome in ("ok", "unstarted"):
            # Stopped in between: the out-record stays, and the next reconciliation (every
            # sweep, and on start) pushes it back, since the ledger no longer holds it.
            if requeue:
                self.outbox.release(a.source, a.message, instead)
            else:
                self.outbox.done(a.message)
        return outcome

    def completing(self, a: Assignment, outcome: dict[str, Any]) -> str:
        """Mark ``a`` as being completed with ``outcome``: 'ok', 'again', 'gone' or 'fenced'."""
        return _text(self._completing(
            keys=[keys.COORDINATOR_LOCK, keys.assignment(a.volunteer, a.task_id)],
            args=[self.token, json.dumps(outcome, separators=(",", ":"))]))

    def finish(self, a: Assignment, credit: tuple[float, float] | None, node: str,
               ttl: int) -> str:
        """Close ``a`` after its result was stored; grant ``credit`` (CPU s, GPU s) to ``node``."""
        ns = a.ns
        if self.outbox is not None:
            # Credit lands on the team's Redis (once per assignment, as the Lua below does),
            # and the message is out no more; then the regional ledger forgets it.
            if credit:
                credits.record(self.outbox.team, node, a.member, credit[0], credit[1], ttl)
            self.outbox.done(a.message)
            credit = None
        cpu, gpu = (f"{credit[0]:.6f}", f"{credit[1]:.6f}") if credit else ("", "")
        return _text(self._finish(
            keys=[keys.COORDINATOR_LOCK, keys.assignment(a.volunteer, a.task_id),
                  keys.ASSIGNMENTS, keys.assigned(a.volunteer), ns + keys.UNACKED,
                  ns + keys.UNACKED_INDEX, a.result_key(), a.claim_key(), keys.credit(node),
                  keys.credited(f"{a.volunteer}/{a.task_id}")],
            args=[self.token, a.member, a.task_id, a.tag, cpu, gpu, f"{time.time():.3f}",
                  max(60, ttl)]))

    def team_list_queue(self, a: Assignment) -> str:
        return queue_of_list(a.source)
