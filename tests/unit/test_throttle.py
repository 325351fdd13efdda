"""The CPU throttle: its cooperation with the gate (fake process control), and its measured
duty cycle on a real burning process."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from worker.gate import Gate, ProcessControl
from worker.policy import OwnerState
from worker.throttle import Throttle


class FakeCelery:
    def set_queues(self, names):
        return True

    def held(self):
        return []


def fake_gate(pool=(11, 12)):
    log: list = []

    def act(name):
        def run(pids):
            log.append((name, tuple(pids)))
            return list(pids)
        return run

    procs = ProcessControl(pool=lambda: list(pool), stop=act("gate-stop"),
                           resume=act("gate-resume"), kill=act("gate-kill"))
    return Gate(FakeCelery(), ("cpu",), procs=procs), log


def fake_throttle(gate, log):
    def act(name):
        def run(pids):
            log.append((name, tuple(pids)))
            return list(pids)
        return run

    return Throttle(gate, stop=act("stop"), resume=act("resume"))


def test_a_phase_stops_the_running_pool_processes_and_continues_exactly_them():
    gate, log = fake_gate()
    gate.apply(OwnerState.IDLE)
    throttle = fake_throttle(gate, log)

    throttle._phase_off()
    assert throttle.held == [11, 12] and gate.suspension.read()[1]
    throttle._phase_on()

    assert log == [("stop", (11, 12)), ("resume", (11, 12))]
    total, stopped_now = gate.suspension.read()
    assert total > 0 and not stopped_now  # throttled time counts for time limits


def test_never_continues_a_process_the_gate_stopped_meanwhile():
    gate, log = fake_gate()
    gate.apply(OwnerState.IDLE)
    throttle = fake_throttle(gate, log)

    throttle._phase_off()
    gate.apply(OwnerState.BUSY)  # the owner is back during the off phase
    throttle._phase_on()

    assert ("resume", (11, 12)) not in log and not [e for e in log if e[0] == "resume"]
    assert gate.suspension.read()[1]  # still stopped: the gate's stop goes on counting


def test_takes_no_process_the_gate_stopped():
    gate, log = fake_gate()
    gate.apply(OwnerState.BUSY)
    throttle = fake_throttle(gate, log)

    throttle._phase_off()
    throttle._phase_on()

    assert [e for e in log if e[0] in ("stop", "resume")] == []


def test_when_the_gate_continues_the_pool_the_clock_is_not_continued_twice():
    gate, log = fake_gate()
    gate.apply(OwnerState.IDLE)
    throttle = fake_throttle(gate, log)
    throttle._phase_off()
    gate.apply(OwnerState.BUSY)
    gate.apply(OwnerState.IDLE)  # the gate continued everything, clock included
    first = gate.suspension.read()
    throttle._phase_on()

    assert not first[1] and gate.suspension.read() == first
    assert log[-1] == ("resume", (11, 12))  # harmless: they already run


def test_duty_one_runs_no_thread_and_lowering_it_back_continues_what_was_stopped():
    gate, log = fake_gate()
    gate.apply(OwnerState.IDLE)
    throttle = fake_throttle(gate, log)
    throttle.set_duty(1.0)
    assert throttle._thread is None

    throttle.period = 0.1
    throttle.set_duty(0.5)
    time.sleep(0.35)
    throttle.set_duty(1.0)

    assert throttle._thread is None and throttle.held == []
    stops = [e for e in log if e[0] == "stop"]
    resumes = [e for e in log if e[0] == "resume"]
    assert stops and len(resumes) == len(stops)
    assert not gate.suspension.read()[1]


def _cpu(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds used, and seconds it could run (used + waiting on a run queue, Linux)."""
    times = process.cpu_times()
    used = times.user + times.system
    try:
        with open(f"/proc/{process.pid}/schedstat") as stat:
            ran, waited = (int(value) / 1e9 for value in stat.read().split()[:2])
        return used, ran + waited
    except OSError:
        return used, used


def _shares(processes: list[psutil.Process], seconds: float) -> list[tuple[float, float]]:
    """Each process's CPU share and runnable share over the same ``seconds`` of wall time.

    The CPU share is what the volunteer sees (``cpu_times``); on a machine whose cores are
    busy with other work it is lower than the throttle allows, so the runnable share (CPU
    plus run-queue wait: every moment the process was not stopped) is measured too.
    """
    before, start = [_cpu(p) for p in processes], time.monotonic()
    time.sleep(seconds)
    after, wall = [_cpu(p) for p in processes], time.monotonic() - start
    return [((a[0] - b[0]) / wall, (a[1] - b[1]) / wall)
            for a, b in zip(after, before, strict=True)]


@pytest.fixture
def burn():
    # A pool-like child spinning one core, with a child of its own (a task's subprocess,
    # sleeping here so that two spinners do not fight over a small machine's cores): the
    # throttle stops and continues the whole tree.
    code = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
            "'import time\\nwhile True: time.sleep(0.001)']);\nwhile True: pass")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        process = psutil.Process(child.pid)
        while not process.children():
            time.sleep(0.01)
        yield process
    finally:
        for each in psutil.Process(child.pid).children(recursive=True):
            each.kill()
        child.kill()
        child.wait()


def test_measured_cpu_share_of_a_real_burn_follows_the_duty(burn):
    gate = Gate(FakeCelery(), ("cpu",), procs=ProcessControl(pool=lambda: [burn.pid]))
    gate.apply(OwnerState.IDLE)
    throttle = Throttle(gate)
    grandchild = burn.children()[0]

    time.sleep(0.3)
    (cpu, runnable), = _shares([burn], 2.0)
    assert runnable > 0.95
    assert cpu > 0.85 or cpu / runnable > 0.5, "this machine's cores are too busy to measure"
    unthrottled = cpu

    shares = {}
    for duty in (0.25, 0.5, 0.75):
        throttle.set_duty(duty)
        time.sleep(0.3)
        shares[duty] = _shares([burn], 4.0)[0]
    stopped_with_it = False
    throttle.set_duty(0.25)
    for _ in range(100):  # the task's own child is stopped with it
        if burn.status() == psutil.STATUS_STOPPED:
            stopped_with_it = grandchild.status() == psutil.STATUS_STOPPED
            break
        time.sleep(0.02)
    throttle.set_duty(1.0)
    print(f"\nunthrottled CPU share {unthrottled:.3f}; throttled (CPU share, runnable share): "
          + ", ".join(f"{duty:.0%}: {c:.3f}, {r:.3f}" for duty, (c, r) in shares.items()))

    for duty, (cpu_share, runnable_share) in shares.items():
        assert duty - 0.15 <= runnable_share <= duty + 0.15, (duty, runnable_share)
        # The CPU share a volunteer measures, relative to what the burn got unthrottled.
        assert duty - 0.15 <= cpu_share / unthrottled <= duty + 0.15, (duty, cpu_share)
    assert 0.35 <= shares[0.5][0] / unthrottled <= 0.65
    assert stopped_with_it
    assert burn.status() != psutil.STATUS_STOPPED
    assert grandchild.status() != psutil.STATUS_STOPPED
    assert _shares([burn], 1.0)[0][1] > 0.95
    assert not gate.suspension.read()[1] and gate.suspension.read()[0] > 3.0
