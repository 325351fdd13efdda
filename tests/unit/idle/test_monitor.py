"""The detector loop ticks fast only while the owner is away: a return must be seen at once."""

from __future__ import annotations

import threading

from worker.idle.monitor import Monitor
from worker.idle.reading import Measure, Reading
from worker.policy import OwnerState, Policy, Thresholds


class Script:
    """A sampler whose input idle time follows a script, one entry per tick."""

    def __init__(self, input_idle: list[float]) -> None:
        self.input_idle = input_idle
        self.now = 0.0

    def read(self) -> Reading:
        value = self.input_idle.pop(0)
        quiet = Measure.of(0.0)
        return Reading(at=self.now, wall=self.now, input_idle=Measure.of(value),
                       screen_locked=Measure.of(False), others_cpu=quiet, others_gpu=quiet,
                       others_memory=quiet, battery=Measure.of(None), exclusive=Measure.of(()))


class RecordingStop(threading.Event):
    """Records each wait instead of sleeping; advances the script's clock."""

    def __init__(self, script: Script, ticks: int) -> None:
        super().__init__()
        self.script, self.ticks, self.waits = script, ticks, []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(round(timeout or 0.0, 3))
        self.script.now += timeout or 0.0
        if len(self.waits) >= self.ticks:
            self.set()
        return self.is_set()


def test_the_loop_ticks_fast_while_idle_and_slow_while_the_owner_is_present():
    script = Script([600.0, 600.0, 0.5, 1.5])  # away, away, the owner is back
    stop = RecordingStop(script, ticks=4)
    states: list[OwnerState] = []

    Monitor(script, Policy(Thresholds(idle_after=60))).run(
        stop, lambda _r, decision: states.append(decision.state), fast=0.1, slow=1.0)

    assert states == [OwnerState.IDLE, OwnerState.IDLE, OwnerState.BUSY, OwnerState.BUSY]
    assert stop.waits == [0.1, 0.1, 1.0, 1.0]
