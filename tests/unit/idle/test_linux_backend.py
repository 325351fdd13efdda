"""Linux backend: the real parsers run on faked D-Bus replies, /proc text and file times."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

from worker.idle import _linux
from worker.idle._linux import Logind, Mutter, children, device_idle, parse_logind

NOW = 1_800_000_000.0


def test_logind_idle_since_gives_seconds_and_lock_state():
    props = {"IdleHint": True, "IdleSinceHint": int((NOW - 300) * 1e6), "LockedHint": True}

    idle, locked = parse_logind(props, NOW)

    assert idle.value == 300.0 and idle.source == "logind"
    assert locked.value is True


def test_logind_not_idle_is_not_a_time_and_missing_keys_are_unknown():
    idle, locked = parse_logind({"IdleHint": False, "IdleSinceHint": 0, "LockedHint": False}, NOW)
    assert not idle.known and "not marked the session idle" in idle.unknown
    assert locked.value is False

    idle, locked = parse_logind({}, NOW)
    assert not idle.known and not locked.known


class FakeBus:
    """Answers like jeepney: Properties.Get -> ((sig, value),), GetAll -> ({k: (sig, v)},)."""

    def __init__(self, session_props: dict, session_id: str = "2") -> None:
        self.session_props = session_props
        self.session_id = session_id
        self.calls = 0

    def send_and_get_reply(self, message, timeout):
        self.calls += 1
        member = message.header.fields[3]  # MEMBER
        if member == "Get":
            path = f"/org/freedesktop/login1/session/_3{self.session_id}"
            return SimpleNamespace(body=(("(so)", (self.session_id, path)),))
        return SimpleNamespace(body=({key: ("b", value) for key, value in
                                      self.session_props.items()},))


def test_logind_reads_seat0s_active_session_over_dbus_and_caches_briefly():
    since = int((time.time() - 120) * 1e6)
    bus = FakeBus({"IdleHint": True, "IdleSinceHint": since, "LockedHint": False})
    logind = Logind(connect=lambda _bus: bus, ttl=60)

    idle = logind.input_idle()
    locked = logind.screen_locked()

    assert 119 <= idle.value <= 125
    assert locked.value is False
    assert bus.calls == 2  # one Get, one GetAll; the lock answer came from the cache


def test_logind_without_an_active_session_or_bus_is_unknown():
    assert "no active session" in Logind(connect=lambda _b: FakeBus({}, ""), ttl=0
                                         ).input_idle().unknown

    def refuse(_bus):
        raise ConnectionRefusedError("no system bus")

    assert "logind not reachable" in Logind(connect=refuse, ttl=0).screen_locked().unknown


def test_mutter_idle_monitor_gives_milliseconds():
    bus = SimpleNamespace(send_and_get_reply=lambda msg, timeout: SimpleNamespace(body=(4250,)))

    assert Mutter(connect=lambda _bus: bus).input_idle().value == 4.25


def test_mutter_failure_is_unknown():
    def broken(_bus):
        raise OSError("no session bus")

    measure = Mutter(connect=broken).input_idle()

    assert not measure.known and "not reachable" in measure.unknown


def test_device_files_newest_access_time_wins():
    atimes = {"/dev/input/event0": NOW - 500, "/dev/input/event3": NOW - 7,
              "/dev/tty1": NOW - 9000, "/dev/pts/0": NOW - 60}
    globbed = {pattern: [p for p in atimes if p.startswith(pattern.split("*")[0].split("[")[0])]
               for pattern in _linux.DEVICE_PATTERNS}

    measure = device_idle(NOW, stat=lambda p: SimpleNamespace(st_atime=atimes[p]),
                          expand=lambda pattern: globbed[pattern])

    assert measure.value == 7.0 and measure.source == "devices"


def test_device_files_unreadable_or_absent_are_unknown():
    def denied(_path):
        raise PermissionError("input group only")

    measure = device_idle(NOW, stat=denied, expand=lambda _p: ["/dev/input/event0"])

    assert not measure.known and "no readable input devices" in measure.unknown


def test_devices_stat_at_most_every_restat_and_count_idle_time_from_the_newest_access():
    clock = {"mono": 0.0, "wall": NOW}
    atimes = {"/dev/pts/0": NOW - 30}
    stats: list[str] = []
    lists: list[str] = []

    def stat(path):
        stats.append(path)
        return SimpleNamespace(st_atime=atimes[path])

    def expand(pattern):
        lists.append(pattern)
        return [p for p in atimes if p.startswith(pattern.split("[")[0])]

    devices = _linux.Devices(("/dev/pts/[0-9]*",), relist=10.0, restat=1.0, stat=stat,
                             expand=expand, clock=lambda: clock["mono"],
                             wall=lambda: clock["wall"])

    assert devices.input_idle().value == 30.0
    clock["mono"] += 0.5
    clock["wall"] += 0.5
    atimes["/dev/pts/0"] = clock["wall"]  # typed just now, not yet looked at
    assert devices.input_idle().value == 30.5  # still counting from the newest seen
    assert len(stats) == 1
    clock["mono"] += 0.5
    clock["wall"] += 0.5
    assert devices.input_idle().value == 0.5  # re-stat'ed after one second
    assert len(stats) == 2 and len(lists) == 1
    atimes["/dev/pts/1"] = clock["wall"] + 9.5
    clock["mono"] += 10
    clock["wall"] += 10
    assert devices.input_idle().value == 0.5  # a new terminal (pts/1) is found on the relist
    assert len(lists) == 2


def test_children_come_from_proc_task_children_files(tmp_path):
    for tid, kids in ((100, "101 102 "), (103, "104")):
        task = tmp_path / "100" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "children").write_text(kids)

    assert sorted(children(100, root=str(tmp_path))) == [101, 102, 104]


def test_children_of_this_process_are_found_for_real():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid())
    finally:
        child.kill()
        child.wait()
