"""GPU used by others, per NVIDIA device through NVML (``nvidia-ml-py``, imported as ``pynvml``).

"Others" is the SM utilization of processes that are not the worker's
(``nvmlDeviceGetProcessUtilization``); where a driver cannot give per-process
figures, the device's utilization counts whenever a foreign process holds
the GPU. The value is the busiest device's; free memory is in the details.
No NVIDIA driver means unknown, not idle; the policy then judges by the
other signals.
"""

from __future__ import annotations

from typing import Any

from worker.idle.processes import OwnProcesses
from worker.idle.reading import Measure

MIB = 1024 * 1024


def _load_nvml() -> Any:
    import pynvml

    return pynvml


class OthersGpu:
    def __init__(self, own: OwnProcesses, nvml: Any = None) -> None:
        self.own = own
        self._nvml = nvml
        self._started = False
        self._failed: str | None = None
        self._count = 0
        self._seen: dict[int, int] = {}
        self.devices: list[dict[str, Any]] = []

    def _start(self) -> str | None:
        try:
            if self._nvml is None:
                self._nvml = _load_nvml()
            self._nvml.nvmlInit()
            self._count = self._nvml.nvmlDeviceGetCount()
        except Exception as exc:
            return f"NVML not available: {exc}"
        return None if self._count else "NVML sees no NVIDIA GPU"

    def measure(self) -> Measure[float]:
        if not self._started:
            self._started, self._failed = True, self._start()
        if self._failed:
            return Measure.missing(self._failed, "nvml")
        own = self.own.pids()
        devices = []
        try:
            for index in range(self._count):
                devices.append(self._device(index, own))
        except Exception as exc:
            return Measure.missing(f"NVML query failed: {exc}", "nvml")
        self.devices = devices
        return Measure.of(max(device["others_percent"] for device in devices), "nvml")

    def _device(self, index: int, own: set[int]) -> dict[str, Any]:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        holders = {proc.pid for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        holders |= {proc.pid for proc in nvml.nvmlDeviceGetGraphicsRunningProcesses(handle)}
        foreign = sorted(holders - own)
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._seen.get(index, 0))
        except nvml.NVMLError as exc:  # NOT_FOUND: no sample since the last call
            none_since = getattr(exc, "value", None) == nvml.NVML_ERROR_NOT_FOUND
            samples = [] if none_since else None
        if samples is None:
            others = utilization if foreign else 0
        else:
            latest: dict[int, Any] = {}
            for sample in samples:
                if sample.timeStamp >= getattr(latest.get(sample.pid), "timeStamp", -1):
                    latest[sample.pid] = sample
            if latest:
                self._seen[index] = max(sample.timeStamp for sample in latest.values())
            others = sum(sample.smUtil for pid, sample in latest.items() if pid not in own)
        return {"index": index, "utilization_percent": utilization,
                "others_percent": min(100, others), "foreign_pids": foreign,
                "free_mib": memory.free // MIB, "total_mib": memory.total // MIB}
