"""Each signal is refreshed at its own pace; a reading carries the latest of each."""

from __future__ import annotations

from worker.idle.reading import Measure
from worker.idle.sampler import Sampler, Signal


def test_signals_refresh_at_their_own_period():
    now = [0.0]
    calls = {"input_idle": 0, "others_cpu": 0}

    def counting(name):
        def measure(_now):
            calls[name] += 1
            return Measure.of(float(calls[name]), name)
        return measure

    sampler = Sampler([Signal("input_idle", counting("input_idle"), 0.1),
                       Signal("others_cpu", counting("others_cpu"), 1.0)],
                      clock=lambda: now[0], wall=lambda: 1000.0 + now[0])
    for step in range(20):  # 2 s at 0.1 s
        now[0] = step * 0.1 + 1e-9
        reading = sampler.read()

    assert calls == {"input_idle": 20, "others_cpu": 2}
    assert reading.others_cpu.value == 2.0 and reading.input_idle.value == 20.0
    assert reading.wall == 1000.0 + now[0]
    assert not reading.battery.known  # not part of this sampler: not sampled, not idle
