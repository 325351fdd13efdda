"""The gate's order of actions, against a fake Celery and fake process control."""

from __future__ import annotations

from worker.gate import Gate, Held, ProcessControl
from worker.policy import OwnerState


class FakeCelery:
    def __init__(self, held: list[Held] | None = None, *, attached: bool = True) -> None:
        self.held_tasks = held or []
        self.attached = attached
        self.log: list[tuple[str, tuple[str, ...]]] = []

    def set_queues(self, names):
        self.log.append(("queues", tuple(names)))
        return self.attached

    def held(self):
        return list(self.held_tasks)


def control(log: list) -> ProcessControl:
    def act(name):
        def run(pids):
            log.append((name, tuple(pids)))
            return list(pids)
        return run

    return ProcessControl(pool=lambda: [11, 12], stop=act("stop"), resume=act("resume"),
                          kill=act("kill"))


def test_busy_stops_taking_before_it_stops_processes_and_idle_resumes_in_reverse():
    celery = FakeCelery()
    gate = Gate(celery, ("cpu", "gpu"), procs=control(celery.log))

    gate.apply(OwnerState.IDLE)
    gate.apply(OwnerState.BUSY)
    gate.apply(OwnerState.IDLE)

    assert celery.log == [("queues", ("cpu", "gpu")),
                          ("queues", ()), ("stop", (11, 12)),
                          ("resume", (11, 12)), ("queues", ("cpu", "gpu"))]
    assert gate.consuming == ("cpu", "gpu") and not gate.suspended


def test_repeated_ticks_do_not_touch_the_consumer_again():
    celery = FakeCelery()
    gate = Gate(celery, ("cpu",), procs=control(celery.log))

    for _ in range(5):
        gate.apply(OwnerState.IDLE)

    assert celery.log == [("queues", ("cpu",))]


def test_every_busy_tick_stops_processes_again_to_catch_a_task_that_slipped_in():
    celery = FakeCelery()
    gate = Gate(celery, ("cpu",), procs=control(celery.log))

    gate.apply(OwnerState.BUSY)
    gate.apply(OwnerState.BUSY)

    assert [entry for entry in celery.log if entry[0] == "stop"] == [("stop", (11, 12))] * 2
    assert [entry for entry in celery.log if entry[0] == "queues"] == [("queues", ())]


def test_without_a_consumer_the_wanted_queues_wait_for_the_next_start():
    celery = FakeCelery(attached=False)
    gate = Gate(celery, ("cpu",), procs=control(celery.log))

    gate.apply(OwnerState.IDLE)

    assert gate.consuming is None and gate.wanted == ("cpu",)
    assert gate.reapply_queues() == ("cpu",)  # what GateStep.start applies
    assert gate.consuming == ("cpu",)


def test_a_worker_starts_consuming_nothing_until_the_owner_is_known_away():
    gate = Gate(FakeCelery(attached=False), ("cpu",), procs=control([]))

    assert gate.reapply_queues() == ()


def test_preempting_ends_each_held_task_once_and_only_its_processes():
    held = [Held("t1", "compute.diag.burn", 11, "tag-1")]
    celery = FakeCelery(held)
    gate = Gate(celery, ("cpu",), procs=control(celery.log))

    gate.apply(OwnerState.BUSY)
    gate.apply(OwnerState.PREEMPTING)
    gate.apply(OwnerState.PREEMPTING)  # Celery has not yet noticed the loss

    kills = [entry for entry in celery.log if entry[0] == "kill"]
    assert kills == [("kill", (11,))]
    assert gate.preempted == ["t1"]


def test_a_held_task_not_yet_started_ends_with_every_pool_process():
    celery = FakeCelery([Held("t2", "compute.diag.sleep", None, "tag-2")])
    gate = Gate(celery, ("cpu",), procs=control(celery.log))

    gate.apply(OwnerState.PREEMPTING)

    assert ("kill", (11, 12)) in celery.log


def test_release_on_shutdown_ends_suspended_tasks_and_continues_the_pool():
    celery = FakeCelery([Held("t1", "compute.diag.burn", 12, "tag-1")])
    gate = Gate(celery, ("cpu",), procs=control(celery.log))
    gate.apply(OwnerState.BUSY)
    celery.log.clear()

    gate.release()

    assert celery.log == [("kill", (12,)), ("resume", (11, 12))]


def test_release_while_idle_leaves_running_tasks_to_finish():
    celery = FakeCelery([Held("t1", "compute.diag.burn", 12, "tag-1")])
    gate = Gate(celery, ("cpu",), procs=control(celery.log))
    gate.apply(OwnerState.IDLE)
    celery.log.clear()

    gate.release()

    assert celery.log == []


def test_emergency_switches_queues_before_it_requeues_normal_work_and_spares_urgent_work():
    held = [Held("normal", "compute.diag.sleep", 11, "t1", queue="cpu"),
            Held("urgent", "compute.diag.noop", 12, "t2", queue="emergency")]
    celery = FakeCelery(held)
    gate = Gate(celery, ("cpu",), emergency_queues=("emergency",), procs=control(celery.log))
    gate.apply(OwnerState.IDLE)
    celery.log.clear()

    gate.set_emergency(True, requeue_running=True)
    gate.apply(OwnerState.IDLE)
    gate.set_emergency(False)

    assert celery.log == [("queues", ("emergency",)), ("kill", (11,)), ("queues", ("cpu",))]
    assert gate.preempted == ["normal"]


def test_emergency_without_requeue_lets_running_work_finish():
    celery = FakeCelery([Held("normal", "compute.diag.sleep", 11, "t1", queue="cpu")])
    gate = Gate(celery, ("cpu",), emergency_queues=("emergency",), procs=control(celery.log))
    gate.apply(OwnerState.IDLE)

    gate.set_emergency(True)

    assert not [entry for entry in celery.log if entry[0] == "kill"]
    assert gate.queues == ("emergency",)


def test_while_present_chosen_kinds_go_on_and_only_the_others_processes_stop():
    celery = FakeCelery([Held("c1", "cpu.task", 11, "1", "cpu"),
                         Held("g1", "gpu.task", 12, "2", "gpu")])
    gate = Gate(celery, ("cpu", "gpu", "cpu@eu"), procs=control(celery.log))
    gate.apply(OwnerState.IDLE)
    celery.log.clear()
    gate.apply(OwnerState.BUSY, running=frozenset({"cpu"}))
    assert celery.log[0] == ("queues", ("cpu", "cpu@eu"))  # the GPU queue is let go first
    assert ("stop", (12,)) in celery.log and ("stop", (11, 12)) not in celery.log
    assert gate.running_pids() == [11]
    celery.log.clear()
    gate.apply(OwnerState.PREEMPTING, running=frozenset({"cpu"}))
    assert ("kill", (12,)) in celery.log  # only the stopped kind is preempted
    assert gate.preempted == ["g1"]


def test_a_gpu_task_is_ended_on_the_owners_return_not_stopped_in_gpu_memory():
    celery = FakeCelery([Held("c1", "cpu.task", 11, "1", "cpu"),
                         Held("g1", "gpu.task", 12, "2", "gpu.vram24")])
    gate = Gate(celery, ("cpu", "gpu"), procs=control(celery.log))
    gate.apply(OwnerState.IDLE)
    celery.log.clear()
    gate.apply(OwnerState.BUSY, end_gpu_tasks=True)
    assert ("kill", (12,)) in celery.log and gate.preempted == ["g1"]
    assert celery.log.index(("kill", (12,))) < celery.log.index(("stop", (11, 12)))
    gate.apply(OwnerState.BUSY, end_gpu_tasks=True)
    assert celery.log.count(("kill", (12,))) == 1  # ended once, not on every tick


def test_a_volunteer_who_keeps_gpu_tasks_gets_them_stopped_like_any_task():
    celery = FakeCelery([Held("g1", "gpu.task", 12, "2", "gpu")])
    gate = Gate(celery, ("cpu", "gpu"), procs=control(celery.log))
    gate.apply(OwnerState.BUSY, end_gpu_tasks=False)
    assert not any(entry[0] == "kill" for entry in celery.log) and gate.preempted == []
