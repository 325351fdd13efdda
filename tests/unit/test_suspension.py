from worker.suspension import SuspensionClock, owed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stopped_seconds_add_up_across_stops_and_count_the_current_one():
    clock = FakeClock()
    suspension = SuspensionClock(clock)
    suspension.stopped()
    clock.now += 5
    suspension.stopped()  # every busy tick says so again: still one stop
    clock.now += 1
    suspension.continued()
    clock.now += 10  # running: not counted
    assert suspension.read() == (6.0, False)
    suspension.stopped()
    clock.now += 2
    assert suspension.read() == (8.0, True)


def test_a_limit_is_owed_the_stopped_time_since_it_was_armed():
    clock = FakeClock()
    suspension = SuspensionClock(clock)
    mark = suspension.read()[0]
    assert owed(suspension, mark) == (0.0, 0.0)  # never stopped: fire now
    suspension.stopped()
    clock.now += 3
    suspension.continued()
    more, mark = owed(suspension, mark)
    assert (more, mark) == (3.0, 3.0)
    assert owed(suspension, mark) == (0.0, 3.0)  # re-armed, ran its 3 s: fire
    suspension.stopped()  # stopped at the very moment it fires: wait for the pool to run
    assert owed(suspension, mark)[0] == 0.5
