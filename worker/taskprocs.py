"""Stop, continue and end the processes of running tasks: the "suspend in place" of the gate.

A task is a prefork pool child and everything it spawned (a renderer, an
inference server). Stopping means SIGSTOP on POSIX and NtSuspendProcess on
Windows (psutil's ``suspend()``): the processes keep their memory but get no
CPU at all, not merely a lower priority. Trees are walked top-down and
re-walked until no new process appears, so a parent cannot spawn a child
between the listing and the stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psutil

from worker.idle.processes import children as direct_children

STOPPED = psutil.STATUS_STOPPED


def tree(roots: Iterable[int], children: Callable[[int], list[int]] = direct_children
         ) -> list[int]:
    """``roots`` and all their descendants, parents before children."""
    found: list[int] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        found.append(pid)
        todo.extend(children(pid))
    return found


def _each(pids: Iterable[int], action: Callable[[psutil.Process], None]) -> list[int]:
    done = []
    for pid in pids:
        try:
            action(psutil.Process(pid))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # it ended on its own: nothing left to stop
        done.append(pid)
    return done


def is_stopped(pid: int) -> bool:
    """True when ``pid`` is stopped, or gone (a gone process uses no CPU either)."""
    try:
        return psutil.Process(pid).status() in (STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def stop_trees(roots: Iterable[int], *, timeout: float = 2.0,
               children: Callable[[int], list[int]] = direct_children) -> list[int]:
    """Stop every process under ``roots`` and return once each one really is stopped.

    Returns the processes stopped. Raises ``TimeoutError`` naming the ones
    that still run after ``timeout`` seconds.
    """
    roots = list(roots)
    stopped: list[int] = []
    for _ in range(5):  # re-walk: a child spawned just before its parent stopped
        fresh = [pid for pid in tree(roots, children) if pid not in stopped]
        if not fresh:
            break
        stopped += _each(fresh, psutil.Process.suspend)
    if not psutil.POSIX:
        return stopped  # NtSuspendProcess returns once the threads are suspended
    deadline = time.monotonic() + timeout
    running = [pid for pid in stopped if not is_stopped(pid)]
    while running:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"processes still running after {timeout:g} s: {running}")
        time.sleep(0.001)
        running = [pid for pid in running if not is_stopped(pid)]
    return stopped


def continue_trees(roots: Iterable[int],
                   children: Callable[[int], list[int]] = direct_children) -> list[int]:
    """Continue every process under ``roots`` (children first, so none waits on a parent)."""
    return _each(reversed(tree(roots, children)), psutil.Process.resume)


def kill_trees(roots: Iterable[int],
               children: Callable[[int], list[int]] = direct_children) -> list[int]:
    """End every process under ``roots`` at once (SIGKILL ends stopped processes too)."""
    return _each(tree(roots, children), psutil.Process.kill)
