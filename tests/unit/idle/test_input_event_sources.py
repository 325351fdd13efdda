"""The Linux event sources against fakes: inotify on a fake /dev/input, logind over a fake bus."""

from __future__ import annotations

import os
import struct
import threading
from types import SimpleNamespace

import pytest

from worker.idle import _linux, _macos, _windows
from worker.idle._inotify import IN_ACCESS, IN_CREATE, InotifyEvents, parse_events
from worker.idle._linux import LogindSignals, owner_back
from worker.idle._xinput import XI_RAW_KEY_PRESS, XI_RAW_MOTION, XInputEvents, raw_event_mask
from worker.idle.wake import Wake

BOUND = 2.0


@pytest.fixture
def devices(tmp_path):
    """A fake /dev/input: two event files, a FIFO, and something that is not a device."""
    (tmp_path / "event0").write_bytes(b"")
    (tmp_path / "event1").write_bytes(b"")
    os.mkfifo(tmp_path / "event2")
    (tmp_path / "mouse0").write_bytes(b"")
    return tmp_path


def test_parse_events_reads_every_struct_with_its_name():
    data = struct.pack("iIII", 1, IN_ACCESS, 0, 0) + struct.pack("iIII", 2, IN_CREATE, 0, 8) \
        + b"event3\0\0"

    assert parse_events(data) == [(1, IN_ACCESS, ""), (2, IN_CREATE, "event3")]


def test_inotify_watches_the_event_files_only(devices):
    source = InotifyEvents.open(str(devices))

    assert sorted(os.path.basename(p) for p in source.devices.values()) == [
        "event0", "event1", "event2"]
    source.close()


def test_a_device_read_or_written_is_input_only_while_armed(devices):
    source = InotifyEvents.open(str(devices))
    (devices / "event0").write_bytes(b"x" * 24)
    assert not source.drain()  # disarmed

    source.arm(True)
    assert (devices / "event0").read_bytes()  # a compositor's read of input: IN_ACCESS
    assert source.drain()
    assert not source.drain()
    (devices / "mouse0").write_bytes(b"x")  # not an event device
    assert not source.drain()
    source.close()


def test_a_fifo_written_to_wakes_a_wait(devices):
    source = InotifyEvents.open(str(devices))
    reader = os.open(devices / "event2", os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(devices / "event2", os.O_WRONLY)
    wake = Wake([source])
    wake.arm(True)
    threading.Timer(0.05, lambda: os.write(writer, b"\0" * 24)).start()

    assert wake.wait(30) == "inotify"
    os.close(writer)
    os.close(reader)
    wake.close()


def test_a_device_plugged_in_later_is_watched(devices):
    source = InotifyEvents.open(str(devices))
    source.arm(True)
    (devices / "event7").write_bytes(b"")
    source.drain()  # learns of the new device
    (devices / "event7").write_bytes(b"x")

    assert source.drain()
    assert str(devices / "event7") in source.devices.values()
    source.close()


def test_no_input_directory_or_no_devices_is_said_not_raised(tmp_path):
    assert InotifyEvents.open(str(tmp_path / "absent")) == f"no {tmp_path / 'absent'}"
    assert "no readable" in InotifyEvents.open(str(tmp_path))


# ---- logind ------------------------------------------------------------------------

def changed(**values):
    return {key: ("b", value) for key, value in values.items()}


def test_owner_back_when_the_desktop_clears_idle_or_lock():
    assert owner_back(changed(IdleHint=False), [])
    assert owner_back(changed(LockedHint=False), [])
    assert owner_back({}, ["IdleHint"])  # invalidated: the next tick reads it
    assert not owner_back(changed(IdleHint=True), [])
    assert not owner_back(changed(Active=True), [])


class FakeBus:
    """A jeepney blocking connection with scripted replies and incoming signals."""

    def __init__(self, session=("c2", "/org/freedesktop/login1/session/c2")) -> None:
        self.session = session
        self.sent: list[object] = []
        self.incoming: list[object] = []
        self.closed = False
        self.sock = SimpleNamespace(fileno=lambda: 42)

    def send_and_get_reply(self, message, timeout=None):
        self.sent.append(message)
        return SimpleNamespace(body=[("(so)", self.session)])

    def receive(self, timeout=None):
        if not self.incoming:
            raise TimeoutError
        return self.incoming.pop(0)

    def close(self):
        self.closed = True


def signal(member, body):
    return SimpleNamespace(header=SimpleNamespace(fields={_linux.HEADER_MEMBER: member}), body=body)


def test_logind_subscribes_to_the_active_session_and_wakes_when_it_stops_idling():
    bus = FakeBus()
    source = LogindSignals.open(lambda _bus: bus)
    assert source.session_path == "/org/freedesktop/login1/session/c2" and source.fileno() == 42
    rule = bus.sent[-1]
    assert "PropertiesChanged" in str(rule.body) and "session/c2" in str(rule.body)

    session = "org.freedesktop.login1.Session"
    bus.incoming = [signal("PropertiesChanged", (session, changed(IdleHint=False), []))]
    assert not source.drain()  # disarmed
    source.arm(True)
    bus.incoming = [signal("PropertiesChanged", (session, changed(IdleHint=True), [])),
                    signal("NameOwnerChanged", ("a", "b", "c"))]
    assert not source.drain()
    bus.incoming = [signal("PropertiesChanged", (session, changed(IdleHint=False), []))]
    assert source.drain() and not bus.incoming


def test_logind_without_a_bus_or_a_session_is_said_not_raised():
    def no_bus(_bus):
        raise FileNotFoundError("/run/dbus/system_bus_socket")

    assert LogindSignals.open(no_bus).startswith("no system D-Bus")
    bus = FakeBus(session=("", "/"))
    assert LogindSignals.open(lambda _bus: bus) == "no active session on seat0" and bus.closed


# ---- X11 and the other OSes ----------------------------------------------------------

def test_raw_event_mask_sets_one_bit_per_event():
    mask = raw_event_mask((XI_RAW_KEY_PRESS, XI_RAW_MOTION))

    assert mask == bytes([0, 0b00100000, 0b00000010, 0])


def test_xinput2_without_a_display_or_libraries_is_said_not_raised():
    assert XInputEvents.open("") == "no DISPLAY set"
    assert XInputEvents.open(":9", load=lambda _name: None) == "libX11 or libXi not installed"


def test_every_backend_lists_its_event_sources_and_windows_and_macos_say_none_is_built():
    names = {os_: [name for name, _ in module.input_event_openers()]
             for os_, module in {"linux": _linux, "win32": _windows, "darwin": _macos}.items()}

    assert names == {"linux": ["xinput2", "inotify", "logind"], "win32": ["raw input"],
                     "darwin": ["event tap"]}
    for module in (_windows, _macos):
        assert all("not built" in opener() for _, opener in module.input_event_openers())
