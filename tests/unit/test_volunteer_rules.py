"""The volunteer's preferences over the owner policy, with fake clocks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from worker.idle.reading import Battery, Measure, Reading
from worker.policy import OwnerState, Policy, Thresholds
from worker.preferences import Preferences
from worker.schedule import Schedule, Window
from worker.volunteer_rules import Rules, plan

IDLE, BUSY, PREEMPTING = OwnerState.IDLE, OwnerState.BUSY, OwnerState.PREEMPTING
LIMITS = Thresholds(idle_after=180, preempt_after=600)
WEDNESDAY_NOON = datetime(2026, 12, 2, 12, tzinfo=ZoneInfo("UTC")).timestamp()


def reading(at, *, input_idle=10_000.0, gpu=0.0, battery=None):
    return Reading(at=at, wall=WEDNESDAY_NOON + at, input_idle=Measure.of(input_idle),
                   screen_locked=Measure.of(False), others_cpu=Measure.of(1.0),
                   others_gpu=Measure.of(gpu), others_memory=Measure.of(30.0),
                   battery=Measure.of(battery or Battery(present=False)),
                   exclusive=Measure.of(()))


class Owner:
    """Rules with a preferences value the test changes and a wall clock it moves."""

    def __init__(self, **prefs):
        self.prefs = Preferences(**prefs)
        self.t = 0.0
        self.rules = Rules(Policy(LIMITS), lambda: self.prefs,
                           wall=lambda: WEDNESDAY_NOON + self.t)

    def tick(self, dt=1.0, **kwargs):
        self.t += dt
        return self.rules.update(reading(self.t, **kwargs))


def codes(decision):
    return [reason.code for reason in decision.reasons]


def test_pause_holds_the_worker_and_resume_lets_it_work_at_once():
    owner = Owner()
    assert owner.tick().state is IDLE
    owner.prefs = Preferences(paused=True)
    decision = owner.tick()
    assert decision.state is BUSY and codes(decision) == ["paused"]
    assert owner.rules.plan.running == frozenset()  # nothing goes on while paused
    owner.prefs = Preferences()
    assert owner.tick().state is IDLE  # a pause is not the owner: no idle_after to wait


def test_a_long_pause_preempts_like_a_long_busy_spell():
    owner = Owner(paused=True)
    owner.tick()
    assert owner.tick(dt=601).state is PREEMPTING


def test_snooze_lasts_until_its_time():
    owner = Owner()
    owner.prefs = Preferences(snooze_until=WEDNESDAY_NOON + 60)
    decision = owner.tick()
    assert decision.state is BUSY and codes(decision) == ["snoozed"]
    assert "snoozed until" in decision.reasons[0].message
    assert owner.tick(dt=60).state is IDLE


def test_outside_the_schedule_is_busy_and_says_when_work_may_start():
    evenings = Schedule(tuple((Window.parse("18:00-08:00"),) for _ in range(7)), "UTC")
    owner = Owner(schedule=evenings)
    decision = owner.tick()
    assert decision.state is BUSY and codes(decision) == ["schedule"]
    assert "next work window Wed 18:00" in decision.reasons[0].message
    assert owner.tick(dt=6 * 3600).state is IDLE  # 18:00


def test_the_volunteer_overrides_idle_time_and_battery_from_the_next_reading():
    owner = Owner()
    assert owner.tick(input_idle=100).state is BUSY  # 180 s needed by the worker's setting
    owner.prefs = Preferences(idle_after=60)
    assert owner.tick(input_idle=100).state is IDLE
    on_battery = Battery(present=True, percent=80, plugged=False)
    assert owner.tick(battery=on_battery).state is BUSY
    owner.prefs = Preferences(idle_after=0, run_on_battery=True)
    assert owner.tick(battery=on_battery).state is IDLE
    # "only above 90 %", on AC or not
    owner.prefs = Preferences(idle_after=0, run_on_battery=True, battery_floor=90)
    assert codes(owner.tick(battery=on_battery)) == ["battery_low"]


def test_while_away_cpu_work_runs_at_the_throttled_share():
    owner = Owner(cpu_limit_percent=40)
    owner.tick()
    assert owner.rules.plan.running == {"cpu", "gpu"} and owner.rules.plan.duty == 0.4


def test_while_present_nothing_runs_unless_the_volunteer_chose_so():
    owner = Owner()
    owner.tick(input_idle=1)
    assert owner.rules.plan.running == frozenset() and owner.rules.plan.end_gpu_tasks


def test_cpu_work_may_go_on_at_a_low_share_while_the_owner_is_present():
    owner = Owner(cpu_while_present=15, cpu_limit_percent=60)
    decision = owner.tick(input_idle=1)
    assert decision.state is BUSY
    assert owner.rules.plan.running == {"cpu"} and owner.rules.plan.duty == 0.15


def test_gpu_work_may_go_on_while_present_but_not_when_others_use_the_gpu():
    owner = Owner(gpu_while_present=True)
    owner.tick(input_idle=1)
    assert owner.rules.plan.running == {"gpu"}
    owner.tick(input_idle=1, gpu=80.0)  # the owner games
    assert owner.rules.plan.running == frozenset()


def test_keeping_gpu_tasks_is_the_volunteers_choice():
    decision = Owner().tick(input_idle=1)
    assert plan(decision, Preferences(keep_gpu_tasks=True)).end_gpu_tasks is False
    assert plan(decision, Preferences()).end_gpu_tasks is True
