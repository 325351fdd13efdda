"""Windows backend against faked user32/kernel32 return values (ctypes structures filled in)."""

from __future__ import annotations

from worker.idle import _windows


class Kernel32:
    def __init__(self, ticks: int, session: int = 1) -> None:
        self.ticks, self.session = ticks, session

    def GetCurrentProcessId(self):
        return 4242

    def ProcessIdToSessionId(self, _pid, session_ref):
        session_ref._obj.value = self.session
        return 1

    def GetTickCount(self):
        return self.ticks


class User32:
    def __init__(self, last_input: int | None = 0, desktop: int = 7, name: str = "Default"):
        self.last_input, self.desktop, self.name, self.closed = last_input, desktop, name, []

    def GetLastInputInfo(self, info_ref):
        if self.last_input is None:
            return 0
        assert info_ref._obj.cbSize == 8
        info_ref._obj.dwTime = self.last_input
        return 1

    def OpenInputDesktop(self, _flags, _inherit, _access):
        return self.desktop

    def GetUserObjectInformationW(self, _handle, _index, buffer, _size, _needed):
        buffer.value = self.name
        return 1

    def CloseDesktop(self, handle):
        self.closed.append(handle)


def test_last_input_gives_seconds_since_input():
    measure = _windows.input_idle(User32(last_input=1_000), Kernel32(ticks=61_000))

    assert measure.value == 60.0 and measure.source == "GetLastInputInfo"


def test_tick_counter_wraparound_after_49_days():
    measure = _windows.input_idle(User32(last_input=0xFFFFFF00), Kernel32(ticks=0x100))

    assert measure.value == 0.512


def test_session_zero_service_cannot_see_the_owner():
    measure = _windows.input_idle(User32(last_input=0), Kernel32(ticks=10, session=0))

    assert not measure.known and "session 0" in measure.unknown


def test_failed_call_is_unknown():
    assert not _windows.input_idle(User32(last_input=None), Kernel32(ticks=5)).known


def test_lock_is_the_secure_desktop_or_no_access_to_the_input_desktop():
    user32 = User32(name="Default")
    assert _windows.screen_locked(user32).value is False
    assert user32.closed == [7]
    assert _windows.screen_locked(User32(name="Winlogon")).value is True
    assert _windows.screen_locked(User32(desktop=0)).value is True
