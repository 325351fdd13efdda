"""Cross-platform signals fed fake OS readings: CPU, memory, battery, exclusive programs, GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import namedtuple
from types import SimpleNamespace

import pytest

from worker.idle import battery
from worker.idle.cpu import OthersCpu
from worker.idle.exclusive import ExclusivePrograms
from worker.idle.gpu import OthersGpu
from worker.idle.memory import OthersMemory
from worker.idle.processes import OwnProcesses, ProcessCatalog, ProcInfo

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal")


class FakeOwn:
    def __init__(self, pids=(), rss=0):
        self._pids, self._rss, self.used = set(pids), rss, 0.0

    def pids(self):
        return self._pids

    def cpu_delta(self):
        used, self.used = self.used, 0.0
        return used

    def rss(self):
        return self._rss


class Machine:
    """A 2-CPU machine whose busy and own CPU seconds the test advances."""

    def __init__(self):
        self.busy = 0.0
        self.own = FakeOwn()

    def times(self):
        return CpuTimes(self.busy, 0, 0, 1000.0, 5.0, 0, 0, 0)

    def run(self, seconds: float, others: float, own: float = 0.0):
        """``others`` and ``own`` in CPUs busy (0..2) for ``seconds``."""
        self.busy += (others + own) * seconds
        self.own.used += own * seconds


def cpu_signal(machine, window=20.0):
    return OthersCpu(machine.own, window=window, cpu_times=machine.times, cpu_count=2,
                     load_average=lambda: (1.0, 0.5, 0.2))


def test_first_reading_uses_the_load_average_then_real_samples():
    machine = Machine()
    cpu = cpu_signal(machine)

    first = cpu.measure(0.0)
    machine.run(1.0, others=1.0)
    second = cpu.measure(1.0)

    assert first.value == 50.0 and first.source == "1-minute load average"
    assert second.value == 50.0 and second.source == "cpu over 1 s"


def test_the_workers_own_cpu_is_not_the_owners():
    machine = Machine()
    cpu = cpu_signal(machine)
    cpu.measure(0.0)
    for t in range(1, 21):
        machine.run(1.0, others=0.1, own=1.9)  # own tasks saturate the machine
        reading = cpu.measure(float(t))

    assert reading.value == 5.0


def test_a_short_spike_does_not_count_but_sustained_load_does():
    machine = Machine()
    cpu = cpu_signal(machine, window=20.0)
    cpu.measure(0.0)
    values = []
    for t in range(1, 41):
        machine.run(1.0, others=2.0 if 20 <= t < 23 else 0.0)  # 3 s at 100 %
        values.append(cpu.measure(float(t)).value)
    assert max(values) < 25.0  # the spike averages out below BOINC's 25 %

    for t in range(41, 56):
        machine.run(1.0, others=1.0)  # half the machine, sustained for 15 s
        last = cpu.measure(float(t)).value
    assert last == 37.5


def test_own_processes_count_new_children_from_zero_and_late_finds_from_now():
    wall = iter([100.0, 101.0, 102.0])
    table = {1: (10.0, 50.0)}
    own = OwnProcesses(roots=lambda: [1], children=lambda pid: [2, 3] if pid == 1 else [],
                       cpu_seconds=lambda pid: table.get(pid), wall=lambda: next(wall))

    assert own.cpu_delta() == 0.0  # first call: baseline
    table.update({1: (11.0, 50.0), 2: (0.5, 100.5), 3: (40.0, 20.0)})
    assert own.cpu_delta() == pytest.approx(1.0 + 0.5)  # 3 is old: counted from now on
    table.update({2: (0.75, 100.5), 3: (41.0, 20.0)})
    assert own.cpu_delta() == pytest.approx(0.25 + 1.0)


def test_own_processes_include_a_containers_uid_seen_from_the_host():
    catalog = ProcessCatalog(pids=lambda: [10, 11, 12],
                             info=lambda pid: ProcInfo(f"p{pid}", 10001 if pid > 10 else 1000, 0))
    catalog.refresh()
    own = OwnProcesses(roots=lambda: [10], uids=[10001], catalog=catalog,
                       children=lambda pid: [])

    assert own.pids() == {10, 11, 12}


def test_real_cpu_burnt_by_our_own_child_is_not_counted_as_the_owner():
    import psutil

    from worker.idle.cpu import busy_seconds

    cpus = psutil.cpu_count()
    cpu = OthersCpu(OwnProcesses(), window=60.0)  # own = this process's tree
    reaped_before = os.times().children_user + os.times().children_system
    started, busy_before = time.monotonic(), busy_seconds(psutil.cpu_times())
    cpu.measure(started)
    # 2 s of CPU time, however long a loaded machine takes to give it
    burner = subprocess.Popen([sys.executable, "-c",
                               "import time\nwhile time.process_time() < 2: pass"])
    burner.wait()
    others = cpu.measure(time.monotonic())
    span = time.monotonic() - started
    total = (busy_seconds(psutil.cpu_times()) - busy_before) / (span * cpus) * 100
    reaped = os.times().children_user + os.times().children_system - reaped_before
    ours = reaped / (span * cpus) * 100

    assert ours >= 1.5 / (span * cpus) * 100  # it really burnt about 2 CPU seconds
    assert others.known
    assert others.value <= total - 0.8 * ours  # our share was taken out of the machine's


def test_others_memory_excludes_our_resident_memory():
    gib = 1024**3
    memory = OthersMemory(FakeOwn(rss=2 * gib),
                          virtual_memory=lambda: SimpleNamespace(total=16 * gib,
                                                                 available=4 * gib))

    assert memory.measure().value == 62.5  # (16 - 4 - 2) / 16


def test_battery_readings():
    assert battery.measure(lambda: None).value.present is False
    reading = battery.measure(lambda: SimpleNamespace(percent=54.21, power_plugged=False)).value
    assert (reading.present, reading.percent, reading.plugged) == (True, 54.2, False)

    def broken():
        raise OSError("no sysfs")

    assert "battery not readable" in battery.measure(broken).unknown


def test_exclusive_programs_match_names_case_and_exe_insensitively_and_skip_our_own():
    catalog = ProcessCatalog(pids=lambda: [1, 2, 3, 4], info=lambda pid: ProcInfo(
        {1: "Steam.exe", 2: "bash", 3: "zoom", 4: "blender"}[pid], 1000, 0))
    programs = ExclusivePrograms(["steam", "Zoom", "blender"], catalog, FakeOwn(pids=[4]))

    assert programs.measure().value == ("steam", "zoom")


def test_exclusive_programs_unknown_when_processes_cannot_be_listed():
    def denied():
        raise PermissionError("hidepid")

    programs = ExclusivePrograms(["steam"], ProcessCatalog(pids=denied), FakeOwn())

    assert "cannot list processes" in programs.measure().unknown


class FakeNvml:
    """NVML as pynvml exposes it, with readings the test sets."""

    NVML_ERROR_NOT_FOUND = 6
    NVML_ERROR_NOT_SUPPORTED = 3

    class NVMLError(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    def __init__(self, devices, fail_init=None):
        self.devices, self.fail_init = devices, fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError(self.fail_init)

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=handle["util"])

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(free=handle["free"] * 2**20, total=8192 * 2**20)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid) for pid in handle["compute"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid) for pid in handle["graphics"]]

    def nvmlDeviceGetProcessUtilization(self, handle, since):
        samples = handle["samples"]
        if isinstance(samples, int):
            raise self.NVMLError(samples)
        return [SimpleNamespace(pid=pid, timeStamp=ts, smUtil=sm) for pid, ts, sm in samples
                if ts > since]


def device(util=0, free=8000, compute=(), graphics=(), samples=()):
    return {"util": util, "free": free, "compute": list(compute), "graphics": list(graphics),
            "samples": samples}


def test_gpu_others_use_excludes_our_processes_per_process():
    nvml = FakeNvml([device(util=90, compute=[500, 600], graphics=[42],
                            samples=[(500, 10, 70), (600, 11, 15), (42, 12, 5)])])
    gpu = OthersGpu(FakeOwn(pids=[500]), nvml=nvml)

    measure = gpu.measure()

    assert measure.value == 20  # 600 and 42 are others'; 500 is our task
    assert gpu.devices[0]["foreign_pids"] == [42, 600]
    assert gpu.devices[0]["free_mib"] == 8000


def test_gpu_busiest_device_wins_and_no_new_samples_means_nobody_computed():
    nvml = FakeNvml([device(util=5, samples=FakeNvml.NVML_ERROR_NOT_FOUND),
                     device(util=60, compute=[7], samples=[(7, 5, 55)])])

    assert OthersGpu(FakeOwn(), nvml=nvml).measure().value == 55


def test_gpu_without_per_process_figures_counts_the_device_when_others_hold_it():
    ours = FakeNvml([device(util=80, compute=[1], samples=FakeNvml.NVML_ERROR_NOT_SUPPORTED)])
    theirs = FakeNvml([device(util=80, compute=[2], samples=FakeNvml.NVML_ERROR_NOT_SUPPORTED)])

    assert OthersGpu(FakeOwn(pids=[1]), nvml=ours).measure().value == 0
    assert OthersGpu(FakeOwn(pids=[1]), nvml=theirs).measure().value == 80


def test_gpu_without_nvml_or_devices_is_unknown():
    no_driver = OthersGpu(FakeOwn(), nvml=FakeNvml([], fail_init=9)).measure()
    no_devices = OthersGpu(FakeOwn(), nvml=FakeNvml([])).measure()

    assert "NVML not available" in no_driver.unknown
    assert "no NVIDIA GPU" in no_devices.unknown
