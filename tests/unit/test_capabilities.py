"""Hardware from fake NVML readings, and the queues a worker takes from it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compute import queues
from worker.capabilities import Gpu, Hardware, find_gpus, queues_for

CPU_ONLY = Hardware(cores=8, ram_bytes=16 << 30, gpus=(), system="Linux x86_64")
WITH_GPU = Hardware(cores=8, ram_bytes=16 << 30, gpus=(Gpu(0, "RTX", 8 << 30),),
                    system="Linux x86_64")


class FakeNvml:
    def __init__(self, devices, fail_init=None):
        self.devices, self.fail_init, self.shut = devices, fail_init, False

    def nvmlInit(self):
        if self.fail_init:
            raise self.fail_init

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self.devices[handle][1])

    def nvmlShutdown(self):
        self.shut = True


def test_gpus_come_from_nvml_and_nvml_is_shut_down():
    nvml = FakeNvml([(b"NVIDIA H200", 141 << 30), ("RTX 4090", 24 << 30)])

    gpus, note = find_gpus(nvml)

    assert gpus == (Gpu(0, "NVIDIA H200", 141 << 30), Gpu(1, "RTX 4090", 24 << 30))
    assert note == "" and nvml.shut


@pytest.mark.parametrize(("nvml", "expected"), [
    (FakeNvml([], OSError("libnvidia-ml.so.1 not found")), "NVML not available"),
    (FakeNvml([]), "NVML sees no NVIDIA GPU"),
])
def test_no_usable_gpu_is_no_gpu_with_a_note(nvml, expected):
    gpus, note = find_gpus(nvml)

    assert gpus == () and expected in note


def test_cpu_and_its_ram_tiers_always_gpu_and_vram_tiers_only_with_a_gpu():
    assert queues_for((), CPU_ONLY) == ("cpu", "cpu.ram2", "cpu.ram4", "cpu.ram8", "cpu.ram16")
    assert queues_for((), WITH_GPU)[5:] == ("gpu", "gpu.vram4", "gpu.vram8")


def test_configured_queues_win_over_the_automatic_choice():
    assert queues_for(("emergency",), WITH_GPU) == ("emergency",)


def test_a_region_adds_the_pinned_twin_of_each_queue():
    assert queues_for(("cpu", "gpu"), WITH_GPU, "eu-west") == (
        "cpu", "gpu", "cpu@eu-west", "gpu@eu-west")
    assert queues.region_of("cpu.ram16@eu-west") == "eu-west"
    assert queues.region_of("cpu.ram16") is None


@pytest.mark.parametrize(("gib", "expected"), [
    (0, "gpu"), (3, "gpu.vram4"), (8, "gpu.vram8"), (10, "gpu.vram12"), (80, "gpu.vram80")])
def test_a_need_goes_to_the_smallest_tier_that_holds_it(gib, expected):
    assert queues.tier("gpu", "vram", gib, queues.VRAM_TIERS) == expected


def test_a_need_beyond_every_tier_is_refused():
    with pytest.raises(ValueError, match="more than any worker tier"):
        queues.tier("cpu", "ram", 1000, queues.RAM_TIERS)


def test_a_dedicated_worker_also_serves_the_team_queue_and_a_volunteer_does_not():
    assert queues_for((), CPU_ONLY, team=True)[-1] == "team"
    assert "team" not in queues_for((), CPU_ONLY)
    assert queues_for(("cpu",), CPU_ONLY, team=True) == ("cpu",)  # configured: as given
