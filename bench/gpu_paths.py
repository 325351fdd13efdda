"""The GPU paths on a real NVIDIA GPU: what a worker finds (GPUs, queues) and what the
owner-idle detector reads while another program keeps the GPU busy, and while the
worker's own process does.

Needs a machine with an NVIDIA driver, PyTorch with CUDA (for the load) and
``nvidia-ml-py``; runs the project's own modules, nothing else of it.

    python bench/gpu_paths.py [--seconds 6]

Prints readings and a JSON summary; exits 1 when a reading is not what the
detector promises (a foreign load seen as busy, the worker's own load not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker import capabilities
from worker.idle.gpu import OthersGpu
from worker.idle.processes import OwnProcesses

LOAD = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(20):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
"""


def sample(sensor: OthersGpu, seconds: float, label: str) -> list[dict]:
    readings = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        measure = sensor.measure()
        device = sensor.devices[0] if sensor.devices else {}
        readings.append({"phase": label, "others_percent": measure.value,
                         "unknown": measure.unknown,
                         "utilization_percent": device.get("utilization_percent"),
                         "foreign_pids": device.get("foreign_pids")})
        print(json.dumps(readings[-1]), flush=True)
        time.sleep(0.5)
    return readings


def busiest(readings: list[dict], key: str) -> float:
    return max((r[key] or 0) for r in readings) if readings else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    seconds = parser.parse_args().seconds
    hardware = capabilities.measure()
    print("GPUs:", [(g.index, g.name, round(g.memory_bytes / 2**30, 1)) for g in hardware.gpus],
          hardware.gpu_note)
    print("queues a worker would consume:", capabilities.queues_for((), hardware))
    sensor = OthersGpu(OwnProcesses())
    script = Path(tempfile.mkdtemp()) / "load.py"
    script.write_text(LOAD)

    quiet = sample(sensor, 2, "quiet")
    # A foreign program: started through a shell that exits, so it is not this process's child.
    subprocess.run(["bash", "-c", f"nohup {sys.executable} {script} {seconds + 6} "
                    ">/dev/null 2>&1 &"], check=True)
    time.sleep(5)  # CUDA start
    foreign = sample(sensor, seconds, "foreign load")
    time.sleep(max(0.0, 7.0))
    after = sample(sensor, 2, "after")
    # The worker's own load: a child of this process, so one of its own.
    own_load = subprocess.Popen([sys.executable, str(script), str(seconds + 6)])
    time.sleep(5)
    own = sample(sensor, seconds, "own load")
    own_load.wait()

    summary = {"gpus": len(hardware.gpus), "queues": capabilities.queues_for((), hardware),
               "quiet_max_others": busiest(quiet, "others_percent"),
               "foreign_max_others": busiest(foreign, "others_percent"),
               "foreign_max_utilization": busiest(foreign, "utilization_percent"),
               "after_max_others": busiest(after, "others_percent"),
               "own_max_others": busiest(own, "others_percent"),
               "own_max_utilization": busiest(own, "utilization_percent")}
    print("summary:", json.dumps(summary))
    ok = (summary["gpus"] >= 1 and summary["foreign_max_others"] >= 50
          and summary["quiet_max_others"] <= 5 and summary["own_max_others"] <= 5
          and summary["own_max_utilization"] >= 50)
    print("as promised" if ok else "NOT as promised")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
