"""Waiting for something that happens in another process, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, every: float = 0.05,
             what: str = "condition") -> T:
    """Return the first truthy ``predicate()``; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not true after {timeout} s (last: {value!r})")
        time.sleep(every)


def wait_for_state(result, state: str, timeout: float = 30.0) -> None:
    """Wait until a Celery ``AsyncResult`` reaches ``state``."""
    wait_for(lambda: result.state == state, timeout, every=0.02,
             what=f"task {result.id} in state {state}")
