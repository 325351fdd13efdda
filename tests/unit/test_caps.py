"""The caps watcher (memory and scratch disk), task scratch folders and the pool follower,
against fake tasks and processes; real files for the scratch sizes."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from worker import scratch
from worker.gate import Held
from worker.memory_cap import MIB, CapWatcher, over_memory
from worker.pool_follow import PoolFollower
from worker.preferences import Preferences


class FakeGate:
    def __init__(self, held):
        self.lock = threading.Lock()
        self.actuator = self
        self._held = held

    def held(self):
        return list(self._held)


def test_over_the_per_task_cap_is_ended_with_the_figures():
    ending = over_memory({"a": 2300 * MIB, "b": 100 * MIB}, per_task=2048 * MIB, total=0)

    assert ending == {"a": "used 2,300 MiB > cap 2,048 MiB per task"}


def test_over_the_total_cap_the_largest_go_first_until_the_rest_fit():
    used = {"a": 300 * MIB, "b": 500 * MIB, "c": 400 * MIB, "d": 100 * MIB}

    ending = over_memory(used, per_task=0, total=600 * MIB)

    assert list(ending) == ["b", "c"]
    assert ending["b"] == "used 500 MiB, the largest; all tasks 1,300 MiB > total cap 600 MiB"
    assert over_memory(used, per_task=0, total=0) == {}


def test_the_watcher_kills_the_task_tree_once_and_records_why(tmp_path):
    tasks = [Held("t1", "big", 101, "1", "cpu"), Held("t2", "small", 102, "2", "cpu"),
             Held("t3", "waiting", None, "3", "cpu")]
    killed = []
    watcher = CapWatcher(FakeGate(tasks), lambda: Preferences(task_memory_mb=200),
                         memory={101: 600 * MIB, 102: 50 * MIB}.__getitem__,
                         kill=lambda pids: killed.append(list(pids)) or list(pids),
                         clock=lambda: 1000.0, scratch_root=tmp_path)

    first = watcher.check()
    again = watcher.check()  # still held until Celery notices: not ended twice

    assert killed == [[101]] and again == []
    assert [e.task_id for e in first] == ["t1"]
    assert watcher.document() == {"ended": [
        {"task_id": "t1", "name": "big", "reason": "used 600 MiB > cap 200 MiB per task",
         "at": 1000.0}]}


def test_the_worker_is_told_each_ending_and_each_change_of_the_caps(tmp_path):
    tasks = [Held("t1", "big", 101, "1", "cpu")]
    prefs = [Preferences(task_memory_mb=200)]
    told, changes = [], []
    watcher = CapWatcher(FakeGate(tasks), lambda: prefs[0], memory={101: 600 * MIB}.__getitem__,
                         kill=list, scratch_root=tmp_path,
                         on_end=lambda task_id, why: told.append((task_id, why)),
                         on_change=lambda: changes.append(prefs[0].task_memory_mb))
    watcher.check()
    watcher.check()
    assert told == [("t1", "used 600 MiB > cap 200 MiB per task")] and changes == []
    prefs[0] = Preferences(task_memory_mb=1024)  # the volunteer raised the cap
    watcher.check()
    assert changes == [1024]


def test_taken_again_by_a_fresh_pool_process_it_is_measured_again(tmp_path):
    tasks = [Held("t1", "big", 101, "1", "cpu")]
    gate = FakeGate(tasks)
    killed = []
    watcher = CapWatcher(gate, lambda: Preferences(task_memory_mb=200),
                         memory=lambda pid: 600 * MIB,
                         kill=lambda pids: killed.append(list(pids)) or list(pids))
    watcher.check()
    gate._held = [Held("t1", "big", 103, "4", "cpu")]
    watcher.check()

    assert killed == [[101], [103]]


def test_no_caps_no_measurement(tmp_path):
    def measure(pid):
        raise AssertionError("measured without a cap")

    watcher = CapWatcher(FakeGate([Held("t1", "x", 101, "1")]), Preferences,
                         memory=measure, kill=lambda pids: [])
    assert watcher.check() == []


def test_a_scratch_folder_over_the_disk_cap_ends_its_task_and_goes(tmp_path):
    root = scratch.prepare(tmp_path / "scratch")
    big = scratch.folder(root, "t1")
    (big / "deep" / "er").mkdir(parents=True)
    (big / "deep" / "er" / "data").write_bytes(os.urandom(3 * MIB))
    scratch.folder(root, "t2").mkdir()
    scratch.folder(root, "t3").mkdir()  # started, its pool process not noted yet
    (scratch.folder(root, "stale")).mkdir()
    tasks = [Held("t1", "writer", 101, "1"), Held("t2", "quiet", 102, "2"),
             Held("t3", "starting", None, "3")]
    killed = []
    watcher = CapWatcher(FakeGate(tasks), lambda: Preferences(scratch_disk_gb=2 / 1024),
                         memory=lambda pid: 0, scratch_root=root,
                         kill=lambda pids: killed.append(list(pids)) or list(pids))

    ended = watcher.check()

    assert killed == [[101]]
    assert ended[0].reason == "scratch folder 3 MiB > cap 2 MiB"
    assert not big.exists() and scratch.folder(root, "t2").exists()
    assert scratch.folder(root, "t3").exists()
    assert not (root / "stale").exists()  # a folder no held task owns is swept


def test_size_counts_nested_files_and_stops_early_past_the_limit(tmp_path):
    for index in range(50):
        (tmp_path / f"d{index % 5}").mkdir(exist_ok=True)
        (tmp_path / f"d{index % 5}" / f"f{index}").write_bytes(b"x" * 8192)

    full = scratch.size(tmp_path)
    early = scratch.size(tmp_path, limit=20_000)
    capped = scratch.size(tmp_path, max_entries=10)

    assert 50 * 8192 <= full < 50 * 8192 * 2
    assert 20_000 < early < full
    assert capped < full
    assert scratch.size(tmp_path / "missing") == 0


def test_enter_points_temporary_files_at_the_task_folder_and_leave_removes_it(tmp_path):
    before = os.environ.get("TMPDIR")
    place = scratch.enter(tmp_path, "task/1")
    try:
        assert tempfile.gettempdir() == str(place) and os.environ["TMPDIR"] == str(place)
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            assert Path(handle.name).parent == place
    finally:
        scratch.leave(tmp_path, "task/1")

    assert not place.exists()
    assert os.environ.get("TMPDIR") == before and tempfile.tempdir is None


def test_the_pool_follows_the_share_of_cores_and_retries_until_attached():
    prefs = [Preferences(max_cpus_percent=50)]
    calls = []
    attached = [False]

    def resize(size):
        calls.append(size)
        return size if attached[0] else None

    follower = PoolFollower(lambda: prefs[0], cores=8, size=8, resize=resize)
    follower.follow()
    attached[0] = True
    follower.follow()
    follower.follow()
    prefs[0] = Preferences(max_cpus_percent=100)
    follower.follow()

    assert calls == [4, 4, 8] and follower.size == 8
