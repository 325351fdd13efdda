"""The sensor-file event source, on a real inotify descriptor and a real folder."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from worker.idle import hostfile
from worker.idle.detector import file_sampler
from worker.idle.wake import Wake

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def test_replacing_the_sensor_file_wakes_only_when_armed_and_only_for_that_file(tmp_path):
    from worker.idle._inotify import FileEvents

    path = tmp_path / "state"
    hostfile.write(path, {"state": "idle", "at": time.time()})
    source = FileEvents.open(str(path))
    assert not isinstance(source, str)
    try:
        hostfile.write(path, {"state": "busy", "at": time.time()})
        assert source.drain() is False  # not armed: old news, drained
        source.arm(True)
        (tmp_path / "other").write_text("x")
        assert source.drain() is False  # another file in the folder
        hostfile.write(path, {"state": "busy", "at": time.time()})
        assert source.drain() is True
        assert source.drain() is False  # nothing new
    finally:
        source.close()


def test_a_wait_on_the_sensor_file_ends_when_the_sensor_writes(tmp_path):
    path = tmp_path / "state"
    hostfile.write(path, {"state": "idle", "at": time.time()})
    sampler = file_sampler(path)
    wake: Wake = sampler.events
    assert wake.active and wake.name == "sensor-file"
    try:
        wake.arm(True)
        started = time.monotonic()
        assert wake.wait(0.2) is None  # nothing written: the timeout
        threading.Timer(0.1, lambda: hostfile.write(path, {"state": "busy",
                                                          "at": time.time()})).start()
        assert wake.wait(10.0) == "sensor-file"
        assert time.monotonic() - started < 10.0
        assert sampler.read().host.value.state == "busy"
    finally:
        wake.close()


def test_no_folder_no_source(tmp_path):
    from worker.idle._inotify import FileEvents

    assert "no folder" in FileEvents.open(str(tmp_path / "missing" / "state"))


def test_a_preferences_edit_wakes_the_loop_but_is_not_owner_input(tmp_path):
    from worker.idle._inotify import FileEvents

    prefs = tmp_path / "preferences.toml"
    prefs.write_text("")
    source = FileEvents.open(str(prefs), name="preferences", kind="settings")
    wake = Wake([source])
    assert not wake.active  # a settings file alone does not make the loop event-driven
    try:
        wake.arm(True)
        threading.Timer(0.1, lambda: hostfile.write(prefs, {})).start()  # replaced by rename
        assert wake.wait(10.0) == "preferences"
        assert wake.last_input is None and not wake.input_idle().known  # not the owner
    finally:
        wake.close()
