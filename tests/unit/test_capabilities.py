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


def test_cpu_always_gpu_only_with_a_gpu():
    assert queues_for((), CPU_ONLY) == ("cpu",)
    assert queues_for((), WITH_GPU) == ("cpu", "gpu")


def test_configured_queues_win_over_the_automatic_choice():
    assert queues_for(("emergency",), WITH_GPU) == ("emergency",)


def test_a_region_adds_the_pinned_twin_of_each_queue():
    assert queues_for((), WITH_GPU, "eu-west") == ("cpu", "gpu", "cpu.eu-west", "gpu.eu-west")
    assert queues.region_of("cpu.eu-west") == "eu-west"
    assert queues.region_of("cpu") is None
