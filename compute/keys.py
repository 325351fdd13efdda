"""Every Redis key name Idle Accelerator writes, in one place.

Celery and kombu own their keys (queues, ``unacked``, ``unacked_index``,
``celery-task-meta-*``); the project's own live under ``idle-accel:``.
"""

from __future__ import annotations

PREFIX = "idle-accel:"

#: kombu's sorted set of delivered, unacknowledged tasks (delivery tag -> time
#: of delivery or of the last lease renewal). See ``worker/celery_gate.py``.
UNACKED_INDEX = "unacked_index"
#: kombu's hash of delivered, unacknowledged messages (delivery tag -> message).
UNACKED = "unacked"


def checkpoint(task_id: str) -> str:
    """A task's saved progress (JSON), for the next run after a preemption."""
    return f"{PREFIX}checkpoint:{task_id}"


def job(job_id: str) -> str:
    """A job's record: its parts, its assemble task and what it was asked (JSON, expires)."""
    return f"{PREFIX}job:{job_id}"


def worker(node: str) -> str:
    """A worker's published status (JSON, with a TTL: a dead worker disappears)."""
    return f"{PREFIX}worker:{node}"


WORKER_PATTERN = f"{PREFIX}worker:*"

#: The fleet's mode (JSON): absent for normal work, ``{"emergency": true, ...}``.
FLEET_MODE = f"{PREFIX}fleet:mode"

#: The fleet's capacity over the last hour (sorted set: time -> sample), for Flower's Fleet
#: page; written by ``idle-accel flower`` (``worker/capacity_history.py``).
CAPACITY_HISTORY = f"{PREFIX}fleet:capacity"


def credit(node: str) -> str:
    """A volunteer's credit (hash: tasks, cpu_seconds, gpu_seconds); kept, not expiring."""
    return f"{PREFIX}credit:{node}"


CREDIT_PATTERN = f"{PREFIX}credit:*"


def credited(task_id: str) -> str:
    """Marks a task whose success was credited, so it is counted once."""
    return f"{PREFIX}credited:{task_id}"


def verification(verification_id: str) -> str:
    """A verified task (hash): k, tolerance, each replica's owner machine and outcome, verdict."""
    return f"{PREFIX}verify:{verification_id}"


#: The latest verdicts, newest first (list of JSON, capped).
VERDICTS = f"{PREFIX}verdicts"


# -- the coordinator (compute/coordinator/): trusted, team side ---------------------------------

#: Enrolled volunteers (hash: name -> JSON record: enrolled, state, reason).
VOLUNTEERS = f"{PREFIX}volunteers"
#: Every volunteer name of the fleet -> where it is enrolled (its Redis and region): names
#: are fleet-wide (credit, status, Flower go by name), on the team's Redis.
VOLUNTEER_NAMES = f"{PREFIX}volunteer-names"
#: The active coordinator's lock (value: its token); standbys wait for it.
COORDINATOR_LOCK = f"{PREFIX}coordinator:lock"
#: Team messages the coordinator took from a queue and has not yet placed (crash-safe).
COORDINATOR_INBOX = f"{PREFIX}coordinator:inbox"
#: Every open assignment (sorted set: ``VOLUNTEER/TASK_ID`` -> its deadline).
ASSIGNMENTS = f"{PREFIX}assignments"


def assignment(volunteer: str, task_id: str) -> str:
    """One task handed to a volunteer (hash: queue, the team's message, times, state)."""
    return f"{PREFIX}assign:{volunteer}/{task_id}"


def assigned(volunteer: str) -> str:
    """The task ids a volunteer holds (set)."""
    return f"{PREFIX}assigned:{volunteer}"


# -- regions on separate brokers (compute/coordinator/regions.py): on the team's Redis ---------

#: Every region whose coordinator ever pulled from the team's Redis (set of names).
REGIONS = f"{PREFIX}regions"


def region_out(region: str) -> str:
    """Team messages out in ``region`` until their team result is stored (hash: SHA-1 of the
    message -> its team list, a newline, the message)."""
    return f"{PREFIX}region:{region}:out"


def region_alive(region: str) -> str:
    """``region``'s heartbeat, renewed by its active coordinator (string with a TTL)."""
    return f"{PREFIX}region:{region}:alive"


def region_stats(region: str) -> str:
    """What happened to ``region`` (hash: ``recovered`` = messages pushed back when it died,
    ``declared_dead`` = how many times)."""
    return f"{PREFIX}region:{region}:stats"


def train_arrived(job_id: str, number: int) -> str:
    """A training round's arrivals (hash: replica -> JSON row), frozen once it closes."""
    return f"{PREFIX}train:{job_id}:{number}:arrived"


def train_closed(job_id: str, number: int) -> str:
    """Who closes a training round (the closing task's id); set once, first come."""
    return f"{PREFIX}train:{job_id}:{number}:closed"
