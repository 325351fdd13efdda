"""Leases on held tasks: fast recovery of a vanished volunteer, no second live copy of a task.

kombu's Redis transport keeps every delivered, unacknowledged task in the
``unacked_index`` sorted set, scored by delivery time, and any consuming
worker hands back to its queue what is older than ``visibility_timeout``.
Stock Celery must therefore choose: a short timeout re-runs long (or
suspended) tasks while they still run; a long one leaves a vanished
worker's task stranded for an hour.

Here each worker renews the score of every task it holds (running,
suspended, waiting for its rate-limit token or its ETA) every third of the
visibility timeout. A held task is never older than a third of the
timeout, so it is never handed out twice however long it runs or sleeps; a
worker that vanishes stops renewing, and its tasks go back to the queue
after the timeout (15 s) plus at most one sweep (5 s).

A renewal is fenced: it moves a lease only if its score is still the one
this worker wrote (or, for a fresh delivery, the one kombu wrote when it
delivered the task here). A worker that was frozen (SIGSTOP, a closed lid,
hibernation) past the timeout finds on thaw that another worker took the
task (a score it did not write): the lease is *taken*, and the worker ends
its copy (``on_lost``) instead of running it beside the new one. The loop
wakes every second and ticks early when the wall clock jumped, so a thawed
worker checks within about a second. One round trip per period for all
held tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from compute import keys
from worker.background import Background

log = logging.getLogger(__name__)

#: A score this close to the one a worker wrote is still its own (float round trips).
SLACK = 0.001
#: How often the loop looks at the clocks (seconds): a freeze is noticed this soon after.
WAKE = 1.0

#: When this process's channel delivered each tag: (before, after) the score kombu wrote.
#: Filled by ``worker/celery_gate.py``, read once per tag by the keeper.
DELIVERED: dict[str, tuple[float, float]] = {}

# KEYS: the unacked index.  ARGV: now, then (tag, low, high) for each held task.
# Returns (tag, 'gone' | 'taken: ...') for each lease not renewed.
_RENEW = """
local lost = {}
for i = 2, #ARGV, 3 do
  local tag = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], tag)
  if not score then
    lost[#lost + 1] = tag; lost[#lost + 1] = 'gone'
  else
    score = tonumber(score)
    local low, high = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    if low ~= nil and (score < low or score > high) then
      lost[#lost + 1] = tag
      lost[#lost + 1] = 'taken: its score ' .. string.format('%.3f', score) .. ' is not the '
        .. string.format('%.3f', low) .. ' this worker wrote'
    else
      redis.call('ZADD', KEYS[1], 'XX', ARGV[1], tag)
    end
  end
end
return lost
"""


def renew(client: Any, held: dict[str, tuple[float, float] | None], now: float,
          index: str = keys.UNACKED_INDEX) -> dict[str, str]:
    """Move each held lease whose score is still in its window to ``now``, atomically.

    ``held`` maps delivery tag -> (low, high) bounds of the score this worker
    expects, or None to renew whatever the score (no record of it). Returns
    the tags not renewed: ``gone`` (not in the index: acknowledged, restored
    to its queue, taken back by a coordinator, or lost by the broker) or
    ``taken: ...`` (re-delivered to another worker since; the scores follow).
    """
    if not held:
        return {}
    argv: list[Any] = [repr(now)]
    for tag, window in held.items():
        argv += [tag, *(map(repr, window) if window else ("", ""))]
    found = client.eval(_RENEW, 1, index, *argv)
    text = [item.decode() if isinstance(item, bytes) else str(item) for item in found]
    return dict(zip(text[::2], text[1::2], strict=True))


class LeaseKeeper:
    """Renews the leases of ``held()`` delivery tags every ``interval`` seconds, on a thread.

    ``on_lost(tag, why)`` is called for a lease another worker took (and for
    one that is gone, when ``gone_is_lost``: a coordinator took it back) while
    the task is still held here; the caller ends that copy.
    """

    def __init__(self, client: Callable[[], Any], held: Callable[[], list[str]],
                 interval: float, *, clock: Callable[[], float] = time.time,
                 index: str = keys.UNACKED_INDEX,
                 on_lost: Callable[[str, str], None] | None = None,
                 gone_is_lost: bool = False,
                 renew: Callable[..., dict[str, str]] = renew) -> None:
        self.index = index
        self._client = client
        self._held = held
        self.interval = interval
        self._clock = clock
        self._renew = renew
        self._on_lost = on_lost
        self.gone_is_lost = gone_is_lost
        self._windows: dict[str, tuple[float, float]] = {}
        self._given_up: set[str] = set()  # held tags whose lease is no longer this worker's
        self._loop = Background("idle-accel-leases", self._run)
        self.renewed = 0  # renewals done, for status and tests
        self.lost: list[str] = []  # tags found gone or taken while still held, newest last
        self.ended: list[str] = []  # tags whose copy was ended here, newest last

    def _window(self, tag: str) -> tuple[float, float] | None:
        window = self._windows.get(tag) or DELIVERED.pop(tag, None)
        return (window[0] - SLACK, window[1] + SLACK) if window else None

    def tick(self) -> None:
        held = [tag for tag in self._held() if tag]
        self._given_up &= set(held)
        # A lease found gone or taken is never renewed again: a renewal without a
        # window would move the new holder's score and make it think it lost it.
        tags = [tag for tag in held if tag not in self._given_up]
        now = self._clock()
        outcome = self._renew(self._client(), {tag: self._window(tag) for tag in tags}, now,
                              self.index)
        self.renewed += len(tags) - len(outcome)
        self._windows = {tag: (now, now) for tag in tags if tag not in outcome}
        # A tag acknowledged between the listing and the renewal is not lost:
        # only one still held afterwards is.
        still = set(self._held())
        for tag, why in outcome.items():
            if tag not in still:
                continue
            self._given_up.add(tag)
            self.lost = [*self.lost[-100:], tag]
            if why.startswith("taken") or self.gone_is_lost:
                log.warning("task delivery %s was handed to another worker while this one "
                            "was cut off or frozen (lease %s): ending this copy", tag, why)
                if self._on_lost is not None:
                    self._on_lost(tag, why)
                    self.ended = [*self.ended[-100:], tag]
            else:
                log.warning("lease of task delivery %s was lost: the broker no longer holds "
                            "it for this worker (restarted without its data, or the task "
                            "went back to its queue while this worker was cut off)", tag)
        for tag in [tag for tag, (_, high) in DELIVERED.items() if high < now - 600]:
            DELIVERED.pop(tag, None)  # delivered and acknowledged between two ticks

    def _run(self, stop: threading.Event) -> None:
        last_wall, last_mono = time.time(), time.monotonic()
        while not stop.wait(min(WAKE, self.interval)):
            wall, mono = time.time(), time.monotonic()
            if wall - last_wall < self.interval and mono - last_mono < self.interval:
                continue
            if max(wall - last_wall, mono - last_mono) > 2 * self.interval + WAKE:
                log.warning("this worker was frozen for %.0f s (suspended machine or stopped "
                            "process): checking the leases of its tasks",
                            max(wall - last_wall, mono - last_mono))
            last_wall, last_mono = wall, mono
            try:
                self.tick()
            except Exception as exc:  # the broker may be restarting: retry next period
                log.debug("leases not renewed: %s", exc)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
