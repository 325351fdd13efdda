"""One active coordinator at a time: a Redis lock with a token, renewed while it works.

Several coordinators may run for availability; the one holding
:data:`compute.keys.COORDINATOR_LOCK` acts, the others wait to take it over
when it expires (``ttl``). Every change the active one makes is a Lua call
that first checks the lock still holds its token (``ledger.py``), so a
coordinator that froze past its lock cannot act on stale beliefs.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from compute import keys

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lock:
    def __init__(self, client: Any, ttl: float = 10.0) -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        self.token = secrets.token_hex(16)
        self.held = False
        self._renewed = 0.0
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take or keep the lock; True while this coordinator is the active one."""
        now = time.monotonic()
        if self.held:
            if now - self._renewed < self.ttl_ms / 3000:
                return True
            self.held = bool(self._renew(keys=[keys.COORDINATOR_LOCK],
                                         args=[self.token, self.ttl_ms]))
        else:
            self.held = bool(self.client.set(keys.COORDINATOR_LOCK, self.token, nx=True,
                                             px=self.ttl_ms))
        if self.held:
            self._renewed = now
        return self.held

    def release(self) -> None:
        if self.held:
            self._release(keys=[keys.COORDINATOR_LOCK], args=[self.token])
            self.held = False
