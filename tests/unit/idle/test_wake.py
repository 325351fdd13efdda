"""Input-event sources: the detector sleeps until the owner does something, with fake fds."""

from __future__ import annotations

import os
import threading
import time

import pytest

from worker.idle.monitor import Monitor
from worker.idle.reading import Measure, Reading
from worker.idle.wake import Wake, open_events
from worker.policy import OwnerState, Policy, Thresholds

BOUND = 2.0  # generous: these tests prove behaviour, the bench measures speed


class PipeSource:
    """A fake event source: a byte written to its pipe is one owner event."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.armed: list[bool] = []
        self.closed = False
        self.fail: Exception | None = None

    def press(self) -> None:
        os.write(self.write_end, b"k")

    def fileno(self) -> int:
        return self.read_end

    def arm(self, on: bool) -> None:
        self.armed.append(on)

    def drain(self) -> bool:
        if self.fail:
            raise self.fail
        try:
            return bool(os.read(self.read_end, 4096)) and bool(self.armed and self.armed[-1])
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.closed = True
        for fd in (self.read_end, self.write_end):
            os.close(fd)


@pytest.fixture
def source():
    made = PipeSource()
    yield made
    if not made.closed:
        made.close()


def test_an_armed_wait_wakes_on_input_and_says_which_source(source):
    wake = Wake([source])
    wake.arm(True)
    threading.Timer(0.05, source.press).start()
    started = time.monotonic()

    assert wake.wait(30) == "fake"
    assert time.monotonic() - started < BOUND
    assert wake.woken_by == "fake" and wake.input_idle().known
    wake.close()


def test_a_quiet_armed_wait_times_out(source):
    wake = Wake([source])
    wake.arm(True)

    assert wake.wait(0.05) is None
    assert not wake.input_idle().known  # no event since the owner left: no claim
    wake.close()


def test_disarmed_input_does_not_wake_and_is_forgotten_on_arming(source):
    wake = Wake([source])
    source.press()  # the owner is present: not watched

    assert wake.wait(0.05) is None
    wake.arm(True)  # what queued while disarmed is old news
    assert wake.wait(0.05) is None
    assert source.armed == [True]


def test_input_already_pending_wakes_at_once(source):
    wake = Wake([source])
    wake.arm(True)
    source.press()

    assert wake.wait(30) == "fake"
    wake.close()


def test_interrupt_ends_a_wait_from_another_thread(source):
    wake = Wake([source])
    wake.arm(True)
    threading.Timer(0.05, wake.interrupt).start()
    started = time.monotonic()

    assert wake.wait(30) is None
    assert time.monotonic() - started < BOUND
    assert wake.wait(0.01) is None  # the interrupt was consumed, not left pending for ever
    wake.close()


def test_input_idle_counts_from_the_event_on_the_given_clock(source):
    now = [100.0]
    wake = Wake([source], clock=lambda: now[0],
                wait_readable=lambda r, w, x, t: ([source.read_end], [], []))
    wake.arm(True)
    source.press()
    assert wake.wait(1) == "fake"
    now[0] = 102.5

    assert wake.input_idle() == Measure.of(2.5, "fake")
    wake.arm(False)
    assert "not watched while the owner is present" in wake.input_idle().unknown


def test_a_source_that_dies_is_dropped_and_said_so(source):
    wake = Wake([source])
    wake.arm(True)
    source.fail = OSError("X connection to :5 lost")
    source.press()

    assert wake.wait(30) is None  # returns at once: nothing left to wait on
    assert not wake.active and source.closed
    assert wake.describe() == {"input_events": "none (polling)",
                               "input_events_missing": ["fake: stopped: X connection to :5 lost"]}


def test_open_events_keeps_what_opens_and_says_why_the_rest_did_not(source):
    def broken():
        raise RuntimeError("libXi segfaulted")

    wake = open_events([("xinput2", lambda: "no DISPLAY set"), ("fake", lambda: source),
                        ("logind", broken)])

    assert wake.active and wake.name == "fake"
    assert wake.describe()["input_events_missing"] == [
        "xinput2: no DISPLAY set", "logind: failed: libXi segfaulted"]
    assert not open_events([("inotify", lambda: "no /dev/input")]).active


# ---- the monitor on events -------------------------------------------------------

def reading(input_idle: float, at: float = 0.0) -> Reading:
    quiet = Measure.of(0.0)
    return Reading(at=at, wall=at, input_idle=Measure.of(input_idle),
                   screen_locked=Measure.of(False), others_cpu=quiet, others_gpu=quiet,
                   others_memory=quiet, battery=Measure.of(None), exclusive=Measure.of(()))


class Script:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def read(self) -> Reading:
        return reading(self.values.pop(0))


class FakeWake:
    """Records arming and waits; wakes with input where the script says so."""

    active = True

    def __init__(self, woken: list[str | None], stop: threading.Event) -> None:
        self.woken, self.stop = woken, stop
        self.calls: list[tuple[str, object]] = []

    def arm(self, on: bool) -> None:
        self.calls.append(("arm", on))

    def wait(self, timeout: float) -> str | None:
        self.calls.append(("wait", round(timeout, 1)))
        if not self.woken:
            self.stop.set()
            return None
        return self.woken.pop(0)

    def interrupt(self) -> None:
        pass


def test_away_the_loop_sleeps_on_events_at_the_slow_pace_and_ticks_at_once_on_input():
    stop = threading.Event()
    events = FakeWake([None, "xinput2"], stop)
    states: list[OwnerState] = []
    # away, away (timed out), the owner's event: the next tick reads fresh input
    script = Script([600.0, 600.0, 0.002])

    Monitor(script, Policy(Thresholds(idle_after=60)), events).run(
        stop, lambda _r, decision: states.append(decision.state), fast=0.1, slow=1.0)

    assert states == [OwnerState.IDLE, OwnerState.IDLE, OwnerState.BUSY]
    assert events.calls == [("arm", True), ("wait", 3.0), ("arm", True), ("wait", 3.0),
                            ("arm", False), ("wait", 1.0), ("arm", False)]  # and on the way out


def test_a_monitor_on_a_sampler_with_events_uses_them():
    class Sampled(Script):
        events = FakeWake([], threading.Event())

    assert Monitor(Sampled([]), Policy()).events is Sampled.events


def test_stop_ends_an_event_wait_at_once(source):
    wake = Wake([source])
    stop = threading.Event()
    ticks: list[OwnerState] = []
    script = Script([600.0] * 1000)
    loop = threading.Thread(target=Monitor(script, Policy(Thresholds(idle_after=60)), wake).run,
                            args=(stop, lambda _r, d: ticks.append(d.state)),
                            kwargs={"fast": 0.1, "slow": 60.0})
    loop.start()
    deadline = time.monotonic() + BOUND
    while not ticks and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    loop.join(BOUND)

    assert not loop.is_alive() and ticks == [OwnerState.IDLE]  # not 60 s later
    assert source.armed == [True, False]  # disarmed on the way out
    wake.close()


def test_every_source_dead_the_monitor_polls_again(source):
    wake = Wake([source])
    source.fail = OSError("gone")
    stop = threading.Event()
    waits: list[float] = []

    class Counting(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(round(timeout or 0.0, 1))
            if len(waits) >= 2:
                stop.set()
            return stop.is_set()

        def is_set(self) -> bool:
            return stop.is_set()

    Monitor(Script([600.0] * 5), Policy(Thresholds(idle_after=60)), wake).run(
        Counting(), lambda _r, _d: None, fast=0.1, slow=1.0)

    assert not wake.active and len(waits) >= 2 and waits[-1] == 0.1  # fast again
