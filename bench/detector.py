"""Owner-idle detector benchmark: CPU cost of the loop, and owner event -> busy decision.

    python bench/detector.py [--seconds 60] [--events 30]

Cost: the detector (every signal, the policy) runs at its default intervals
for ``--seconds``; its CPU time (all threads) over the wall time is the share
of one core it takes. Measured in both loop speeds: owner away (idle, input
watched at 10 Hz) and owner present (busy, 1 Hz); on this machine as it is,
and again with an X11 display (Xvfb) so the X11 probe runs as on a desktop.

Reaction: with an X11 display, a mouse motion is injected through XTest and
the time until the policy says "busy" is taken, ``--events`` times.
Requires Xvfb and libXtst for the X11 parts (Debian: xvfb, libxtst6).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.settings import Settings
from worker.idle.detector import local_sampler, thresholds
from worker.idle.monitor import Monitor
from worker.policy import OwnerState, Policy

QUIET = {"cpu_busy_percent": 100.0, "memory_busy_percent": 100.0, "exclusive_programs": ""}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cost(seconds: float, settings: Settings) -> tuple[float, int]:
    monitor = Monitor(local_sampler(settings), Policy(thresholds(settings)))
    monitor.tick()  # imports, NVML and X11 opening are start-up, not the loop
    ticks = 0

    def count(_reading, _decision):
        nonlocal ticks
        ticks += 1

    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    started_cpu, started = cpu_seconds(), time.monotonic()
    monitor.run(stop, count, fast=settings.poll_interval, slow=settings.sample_interval)
    return (cpu_seconds() - started_cpu) / (time.monotonic() - started) * 100.0, ticks


class Xvfb:
    def __init__(self) -> None:
        self.number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
        self.name = f":{self.number}"
        self.process = subprocess.Popen(["Xvfb", self.name, "-screen", "0", "320x240x24",
                                         "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Mouse:
    """Moves the pointer of a display through XTest, from this process."""

    def __init__(self, display: str) -> None:
        self.xlib = ctypes.CDLL(ctypes.util.find_library("X11"))
        self.xtst = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        self.xlib.XOpenDisplay.restype = ctypes.c_void_p
        self.xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.xlib.XFlush.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                   ctypes.c_int, ctypes.c_ulong]
        self.display = self.xlib.XOpenDisplay(display.encode())
        self.x = 10

    def move(self) -> float:
        self.x = 10 if self.x > 300 else self.x + 7
        started = time.monotonic()
        self.xtst.XTestFakeMotionEvent(self.display, -1, self.x, 50, 0)
        self.xlib.XFlush(self.display)
        return started


def reaction(events: int, settings: Settings, display: str) -> list[float]:
    monitor = Monitor(local_sampler(settings), Policy(thresholds(settings)))
    mouse = Mouse(display)
    state = {"value": OwnerState.BUSY, "busy_at": 0.0}
    changed = threading.Condition()

    def on_tick(reading, decision):
        with changed:
            if decision.state is not state["value"]:
                state["value"] = decision.state
                if decision.state is OwnerState.BUSY:
                    state["busy_at"] = time.monotonic()
                changed.notify_all()

    stop = threading.Event()
    loop = threading.Thread(target=monitor.run, args=(stop, on_tick), daemon=True,
                            kwargs={"fast": settings.poll_interval,
                                    "slow": settings.sample_interval})
    loop.start()
    latencies = []
    for _ in range(events):
        with changed:
            changed.wait_for(lambda: state["value"] is OwnerState.IDLE, timeout=30)
        time.sleep(random.uniform(0.0, settings.poll_interval))  # any phase of the loop
        moved = mouse.move()
        with changed:
            if changed.wait_for(lambda: state["value"] is OwnerState.BUSY, timeout=10):
                latencies.append(state["busy_at"] - moved)
    stop.set()
    loop.join(5)
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args()
    defaults = Settings.load()
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}; "
          f"poll {defaults.poll_interval} s, sample {defaults.sample_interval} s")
    print()
    away = Settings.load(idle_after=0.0, **QUIET)  # always idle: the 10 Hz loop
    present = Settings.load(idle_after=1e9)  # never away long enough: always busy, 1 Hz
    rows = [("owner away (idle, 10 Hz)", away), ("owner present (busy, 1 Hz)", present)]
    print(f"{'detector cost':<40}{'seconds':>8}{'ticks':>8}{'% of one core':>16}")
    for label, settings in rows:
        share, ticks = cost(args.seconds, settings)
        print(f"{label:<40}{args.seconds:>8.0f}{ticks:>8}{share:>16.3f}")
    if not (shutil.which("Xvfb") and ctypes.util.find_library("Xtst")):
        print("(no Xvfb or libXtst: X11 figures skipped)")
        return
    server = Xvfb()
    os.environ["DISPLAY"] = server.name
    try:
        for label, settings in rows:
            share, ticks = cost(args.seconds, settings)
            print(f"{label + ', X11 display':<40}{args.seconds:>8.0f}{ticks:>8}{share:>16.3f}")
        quick = Settings.load(idle_after=0.3, **QUIET)
        latencies = [1000 * value for value in reaction(args.events, quick, server.name)]
    finally:
        server.close()
    print()
    print(f"owner event (X11 mouse motion) -> busy decision, {len(latencies)} events, ms")
    print(f"{'p50':>8}{'p95':>8}{'max':>8}{'mean':>8}")
    print(f"{percentile(latencies, 0.5):>8.1f}{percentile(latencies, 0.95):>8.1f}"
          f"{max(latencies):>8.1f}{statistics.mean(latencies):>8.1f}")


if __name__ == "__main__":
    main()
