"""Task scratch space: each task writes its temporary files in a folder of its own.

The worker makes one folder per worker process (``root_for``: under the
system's temporary folder, readable by the owner only) and, in the pool
process, points ``TMPDIR``/``TEMP``/``TMP`` and :mod:`tempfile` at
``ROOT/TASK_ID`` while the task runs (its subprocesses inherit them); the
folder is removed when the task ends (``worker/celery_gate.py`` connects
``enter``/``leave`` to the task signals). A task ended by the caps watcher
never reaches ``leave``: the watcher removes its folder, and ``sweep``
removes any folder whose task the worker no longer holds.

``size`` is what the disk cap (``[usage] scratch_disk_gb``) checks: a walk
with ``os.scandir`` that stops once it has seen more than the cap or
``MAX_ENTRIES`` entries, so a task with a million small files costs one
bounded walk per check, not a million ``stat`` calls.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

#: The worker's scratch root, inherited by its pool processes.
ENV = "IDLE_ACCEL_SCRATCH"
#: At most this many entries are looked at per task and check.
MAX_ENTRIES = 100_000
_TEMP_VARS = ("TMPDIR", "TEMP", "TMP")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def root_for(node: str, pid: int | None = None) -> Path:
    """The scratch root of the worker ``node`` running as process ``pid``."""
    name = _UNSAFE.sub("_", f"{node}-{pid or os.getpid()}")
    return Path(tempfile.gettempdir()) / "idle-accel-scratch" / name


def folder(root: Path, task_id: str) -> Path:
    return root / _UNSAFE.sub("_", task_id)


def prepare(root: Path) -> Path:
    """Make ``root`` (owner only), empty."""
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, mode=0o700)
    return root


_saved: dict[str, str | None] = {}


def enter(root: Path, task_id: str) -> Path:
    """In the pool process, before the task runs: temporary files go to its own folder."""
    place = folder(root, task_id)
    place.mkdir(parents=True, exist_ok=True)
    for name in _TEMP_VARS:
        _saved.setdefault(name, os.environ.get(name))
        os.environ[name] = str(place)
    tempfile.tempdir = str(place)
    return place


def leave(root: Path, task_id: str) -> None:
    """In the pool process, after the task: the folder goes, temporary files go back to normal."""
    for name in _TEMP_VARS:
        before = _saved.pop(name, None)
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
    tempfile.tempdir = None
    remove(root, task_id)


def remove(root: Path, task_id: str) -> None:
    shutil.rmtree(folder(root, task_id), ignore_errors=True)


def sweep(root: Path, keep: Iterable[str]) -> list[str]:
    """Remove the folders of tasks not in ``keep`` (ended without cleaning up); their names."""
    kept = {folder(root, task_id).name for task_id in keep}
    removed = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name not in kept:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed


def size(path: Path, limit: int | None = None, max_entries: int = MAX_ENTRIES) -> int:
    """Bytes under ``path`` (symlinks not followed); stops early once over ``limit``."""
    total, seen = 0, 0
    todo = [str(path)]
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    else:
                        stat = entry.stat(follow_symlinks=False)
                        # Blocks really used: a sparse file takes what it wrote.
                        total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
                except FileNotFoundError:
                    continue
                if (limit is not None and total > limit) or seen >= max_entries:
                    return total
    return total
