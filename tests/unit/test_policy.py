"""The owner-state policy: examples of every rule, and properties over random owners."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.idle.reading import Battery, HostReport, Measure, Reading
from worker.policy import OwnerState, Policy, Thresholds

LIMITS = Thresholds(idle_after=180, preempt_after=600, locked_idle_after=10)
IDLE, BUSY, PREEMPTING = OwnerState.IDLE, OwnerState.BUSY, OwnerState.PREEMPTING


def local(at, *, input_idle=10_000.0, cpu=1.0, gpu=None, memory=30.0, battery=None,
          exclusive=(), locked=False):
    return Reading(
        at=at, wall=1e9 + at,
        input_idle=input_idle if isinstance(input_idle, Measure) else Measure.of(input_idle),
        screen_locked=Measure.of(locked),
        others_cpu=cpu if isinstance(cpu, Measure) else Measure.of(cpu),
        others_gpu=Measure.missing("no NVML") if gpu is None else Measure.of(gpu),
        others_memory=Measure.of(memory),
        battery=Measure.of(battery or Battery(present=False)),
        exclusive=exclusive if isinstance(exclusive, Measure) else Measure.of(exclusive),
    )


def host(at, state="idle", *, age=0.5, idle_seconds=None, problem=None):
    return Reading(at=at, wall=1e9 + at, host=Measure.of(
        HostReport(state, age, idle_seconds, ("input 1 s ago",), problem)))


def codes(decision):
    return [reason.code for reason in decision.reasons]


def test_owner_away_for_long_is_idle_at_once_with_no_reasons():
    decision = Policy(LIMITS).update(local(0.0))

    assert decision.state is IDLE and decision.reasons == () and decision.changed
    assert decision.away_for == 10_000.0


def test_recent_input_is_busy_and_says_how_long_ago():
    decision = Policy(LIMITS).update(local(0.0, input_idle=2.0))

    assert decision.state is BUSY
    assert [r.message for r in decision.reasons] == ["input 2 s ago",
                                                     "owner away 2 s of 3 min needed"]


def test_busy_on_the_first_tick_with_input_and_idle_only_after_idle_after():
    policy = Policy(LIMITS)
    assert policy.update(local(0.0)).state is IDLE

    touched = policy.update(local(1.0, input_idle=0.0))
    states = [policy.update(local(1.0 + t, input_idle=t)).state for t in range(1, 200)]

    assert touched.state is BUSY and touched.changed
    assert states[:179] == [BUSY] * 179  # 1..179 s away
    assert states[179] is IDLE  # 180 s away


def test_others_load_is_busy_and_the_workers_thresholds_apply():
    policy = Policy(LIMITS)

    assert codes(policy.update(local(0.0, cpu=63.0))) == ["cpu"]
    assert policy.update(local(1.0, cpu=63.0)).reasons[0].message == "others use 63 % CPU"
    assert codes(Policy(LIMITS).update(local(0.0, gpu=50.0))) == ["gpu"]
    assert codes(Policy(LIMITS).update(local(0.0, memory=95.0))) == ["memory"]
    assert Policy(LIMITS).update(local(0.0, cpu=20.0, gpu=10.0, memory=80.0)).state is IDLE


def test_unknown_is_never_idle_except_where_it_cannot_hide_the_owner():
    unknown_input = local(0.0, input_idle=Measure.missing("no DISPLAY; no devices"))
    unknown_cpu = local(0.0, cpu=Measure.missing("no /proc/stat"))
    unknown_exclusive = local(0.0, exclusive=Measure.missing("hidepid"))

    assert codes(Policy(LIMITS).update(unknown_input)) == ["input_unknown"]
    assert "no DISPLAY" in Policy(LIMITS).update(unknown_input).reasons[0].message
    assert codes(Policy(LIMITS).update(unknown_cpu)) == ["cpu_unknown"]
    assert codes(Policy(LIMITS).update(unknown_exclusive)) == ["exclusive_unknown"]
    no_gpu = Policy(LIMITS).update(local(0.0))  # GPU unknown: judged by the rest
    assert no_gpu.state is IDLE and [n.code for n in no_gpu.notes] == ["gpu_unknown"]


def test_unknown_input_can_be_waived_then_idle_after_counts_from_start():
    limits = Thresholds(idle_after=180, require_input=False)
    policy = Policy(limits)
    blind = Measure.missing("headless")

    first = policy.update(local(0.0, input_idle=blind))
    later = policy.update(local(180.0, input_idle=blind))

    assert first.state is BUSY and codes(first) == ["waiting"]
    assert later.state is IDLE and [n.code for n in later.notes] == ["input_unknown", "gpu_unknown"]


def test_battery_rules():
    on_battery = Battery(present=True, percent=80.0, plugged=False)
    low_plugged = Battery(present=True, percent=12.0, plugged=True)

    assert codes(Policy(LIMITS).update(local(0.0, battery=on_battery))) == ["battery"]
    allowed = Thresholds(run_on_battery=True)
    assert Policy(allowed).update(local(0.0, battery=on_battery)).state is IDLE
    low = Policy(allowed).update(local(0.0, battery=low_plugged))
    assert codes(low) == ["battery_low"]
    assert low.reasons[0].message == "battery 12 % is below 20 %"


def test_exclusive_program_is_busy_and_named():
    decision = Policy(LIMITS).update(local(0.0, exclusive=("steam",)))

    assert decision.reasons[0].message == "exclusive program: steam"


def test_locked_screen_ignores_input_and_needs_only_locked_idle_after():
    policy = Policy(LIMITS)
    assert policy.update(local(0.0, input_idle=1.0)).state is BUSY

    locked = [policy.update(local(t, input_idle=0.0, locked=True)) for t in (1.0, 5.0, 11.0)]
    unlocked = policy.update(local(12.0, input_idle=0.5))

    assert [d.state for d in locked] == [BUSY, BUSY, IDLE]  # 10 s after the last real input
    assert "screen_locked" in [n.code for n in locked[-1].notes]
    assert unlocked.state is BUSY and unlocked.changed  # typing after unlock is the owner


def test_locked_screen_still_sees_others_load():
    policy = Policy(LIMITS)

    assert policy.update(local(100.0, locked=True, cpu=90.0)).state is BUSY


def test_preempting_after_preempt_after_busy_and_reset_when_idle():
    policy = Policy(LIMITS)
    states = [policy.update(local(float(t), cpu=90.0)) for t in range(0, 700, 100)]

    assert [d.state for d in states] == [BUSY] * 6 + [PREEMPTING]
    assert states[-1].busy_for == 600.0
    back = [policy.update(local(600.0 + t, cpu=1.0)) for t in (100.0, 180.0)]
    assert [d.state for d in back] == [PREEMPTING, IDLE]
    assert back[-1].busy_for == 0.0


def test_host_file_stale_missing_or_invalid_is_busy():
    assert codes(Policy(LIMITS).update(host(0.0, age=11.0))) == ["sensor_stale"]
    assert codes(Policy(LIMITS).update(host(0.0, problem="does not exist"))) == ["sensor_invalid"]
    lax = Thresholds(sensor_max_age=0)
    assert Policy(lax).update(host(0.0, age=3600.0, idle_seconds=500)).state is IDLE


def test_host_file_idle_seconds_are_used_once_not_twice():
    policy = Policy(LIMITS)

    assert policy.update(host(0.0, "busy", idle_seconds=170.0, age=2.0)).state is BUSY
    assert policy.update(host(8.0, "idle", idle_seconds=178.0, age=0.0)).state is BUSY
    assert policy.update(host(10.0, "idle", idle_seconds=180.0, age=0.0)).state is IDLE


def test_plain_host_words_busy_then_idle_after_idle_after():
    policy = Policy(LIMITS)

    assert codes(policy.update(host(0.0, "busy"))) == ["host_busy"]
    assert policy.update(host(179.0, "idle")).state is BUSY
    assert policy.update(host(180.0, "idle")).state is IDLE


def test_decision_json_is_machine_readable():
    document = Policy(LIMITS).update(local(0.0, cpu=70.0)).to_json()

    assert document["state"] == "busy"
    assert document["reasons"] == [{"code": "cpu", "message": "others use 70 % CPU"}]
    assert document["notes"][0]["code"] == "gpu_unknown"


# ---- properties ------------------------------------------------------------------

steps = st.lists(st.tuples(st.floats(0.05, 120.0), st.booleans(), st.booleans()),
                 min_size=1, max_size=120)


def simulate(events, limits=LIMITS):
    """Run the policy over (dt, touched input, others' CPU high) events.

    Yields (time, time of the owner's last activity or None, activity now, decision).
    """
    policy = Policy(limits)
    now, last_input, last_activity = 0.0, None, None
    for dt, touched, cpu_high in events:
        now += dt
        if touched:
            last_input = now
        if touched or cpu_high:
            last_activity = now
        input_idle = 1e6 if last_input is None else now - last_input
        decision = policy.update(local(now, input_idle=input_idle, cpu=90.0 if cpu_high else 1.0))
        yield now, last_activity, touched or cpu_high, decision


@settings(max_examples=300, deadline=None)
@given(steps)
def test_never_idle_within_idle_after_of_any_owner_activity(events):
    for now, last_activity, _active, decision in simulate(events):
        if last_activity is not None and now - last_activity < LIMITS.idle_after:
            assert decision.state is not IDLE


@settings(max_examples=300, deadline=None)
@given(steps)
def test_busy_on_the_first_tick_after_activity(events):
    for _now, _last, active, decision in simulate(events):
        if active:
            assert decision.state in (BUSY, PREEMPTING)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_idle_again_once_the_owner_stayed_away_idle_after(events):
    for now, last_activity, active, decision in simulate(events):
        if not active and (last_activity is None or now - last_activity >= LIMITS.idle_after):
            assert decision.state is IDLE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.05, LIMITS.idle_after * 0.99), min_size=2, max_size=200),
       st.booleans())
def test_no_oscillation_when_readings_alternate_faster_than_the_thresholds(gaps, by_input):
    """Activity every < idle_after seconds: after the first, the state never returns to idle."""
    events = []
    for index, gap in enumerate(gaps):
        active = index % 2 == 0
        events.append((gap / 2, active and by_input, active and not by_input))
    decisions = [decision for *_, decision in simulate(events)]

    assert all(decision.state is not IDLE for decision in decisions)
    assert sum(decision.changed for decision in decisions) <= 1  # at most busy -> preempting


@settings(max_examples=200, deadline=None)
@given(steps)
def test_preempting_exactly_when_busy_has_lasted_preempt_after(events):
    for *_, decision in simulate(events):
        if decision.state is not IDLE:
            assert (decision.state is PREEMPTING) == (decision.busy_for >= LIMITS.preempt_after)
        else:
            assert decision.busy_for == 0.0 and decision.reasons == ()
