"""Owner-idle detector benchmark: CPU cost of the loop, and owner event -> busy decision.

    python bench/detector.py [--seconds 60] [--events 30]

Side by side in one run, per input backend:
- ``polling`` (the old loop): input idle time polled at 10 Hz while the owner
  is away (``poll_interval``), every signal at 1 Hz while present; on this
  machine as it is (terminal fallback) and with an X11 display (Xvfb);
- ``xinput2`` (event-driven): the same signals at 1 Hz, and XInput2 raw
  events on the X connection wake the loop at once (Xvfb);
- ``inotify`` (event-driven): the same, woken by inotify on a fake
  ``/dev/input`` directory whose ``event*`` files the bench writes to (the
  real one needs root or the ``input`` group, and has no devices in CI);
- ``logind`` is listed when the system bus is reachable (not measured);
- the host's sensor file, as a worker in a container reads it: polled at
  10 Hz (the old loop) against re-read on inotify's word that the sensor
  replaced it (``sensor-file``); a heartbeat writer in another process
  rewrites it every second, as the host sensor does.

Cost: the detector runs ``--seconds`` in each state, owner away (idle) and
owner present (busy); its CPU time (all threads of this process; the X
server's is not counted) over the wall time is the share of one core.
Reaction: an owner event (an XTest mouse motion, or a write to a fake input
device) is injected at a random phase of the loop and the time until the
policy says "busy" is taken, ``--events`` times.
Requires Xvfb and libXtst for the X11 rows (Debian: xvfb, libxtst6).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.settings import Settings
from worker.idle import hostfile
from worker.idle._inotify import FileEvents, InotifyEvents
from worker.idle._linux import LogindSignals
from worker.idle._xinput import XInputEvents
from worker.idle.detector import local_sampler, thresholds
from worker.idle.monitor import Monitor
from worker.idle.sampler import FileSampler
from worker.idle.wake import Wake
from worker.policy import OwnerState, Policy

QUIET = {"cpu_busy_percent": 100.0, "memory_busy_percent": 100.0, "exclusive_programs": ""}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def monitor(settings: Settings, events: Callable[[], Wake | None]) -> Monitor:
    """The detector as the worker builds it, with the backend's events (None: polled)."""
    wake = events()
    if settings.sensor_file:
        sampler = FileSampler(Path(settings.sensor_file), events=wake)
        return Monitor(sampler, Policy(thresholds(settings)))  # type: ignore[arg-type]
    return Monitor(local_sampler(settings, events=wake or False), Policy(thresholds(settings)))


class SensorFile:
    """The host sensor's file: a heartbeat writer in another process (its CPU is not this
    process's), and an owner's return written from here."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="sensor-")
        self.path = Path(self.directory, "state")
        self.idle()
        self.heartbeat: subprocess.Popen[bytes] | None = None

    def beat(self, on: bool) -> None:
        if on and self.heartbeat is None:
            code = ("import sys, time; sys.path.insert(0, sys.argv[2]);"
                    "from worker.idle import hostfile\n"
                    "while True:\n"
                    "    hostfile.write(sys.argv[1], {'state': 'idle', 'at': time.time(),"
                    " 'idle_seconds': 3600})\n"
                    "    time.sleep(1)")
            self.heartbeat = subprocess.Popen([sys.executable, "-c", code, str(self.path),
                                               str(Path(__file__).resolve().parents[1])])
        elif not on and self.heartbeat is not None:
            self.heartbeat.kill()
            self.heartbeat.wait()
            self.heartbeat = None

    def idle(self) -> None:
        hostfile.write(self.path, {"state": "idle", "at": time.time(), "idle_seconds": 3600})

    def busy(self) -> float:
        started = time.monotonic()
        hostfile.write(self.path, {"state": "busy", "at": time.time(),
                                   "reasons": [{"code": "input", "message": "bench"}]})
        threading.Timer(0.5, self.idle).start()  # away again for the next event
        return started


def cost(seconds: float, settings: Settings,
         events: Callable[[], Wake | None]) -> tuple[float, int]:
    detector = monitor(settings, events)
    detector.tick()  # imports, NVML and X11 opening are start-up, not the loop
    ticks = 0

    def count(_reading, _decision):
        nonlocal ticks
        ticks += 1

    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    started_cpu, started = cpu_seconds(), time.monotonic()
    detector.run(stop, count, fast=settings.poll_interval, slow=settings.sample_interval)
    share = (cpu_seconds() - started_cpu) / (time.monotonic() - started) * 100.0
    if detector.events is not None:
        detector.events.close()
    return share, ticks


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


class DeviceFile:
    """A fake input device: each write to ``event0`` is what a compositor's read raises."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="fake-input-")
        self.path = Path(self.directory, "event0")
        self.path.write_bytes(b"")

    def move(self) -> float:
        started = time.monotonic()
        with open(self.path, "ab") as device:
            device.write(b"\0" * 24)  # one struct input_event
        return started


def reaction(events: int, settings: Settings, wake: Callable[[], Wake | None],
             inject: Callable[[], float]) -> list[float]:
    detector = monitor(settings, wake)
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
    loop = threading.Thread(target=detector.run, args=(stop, on_tick), daemon=True,
                            kwargs={"fast": settings.poll_interval,
                                    "slow": settings.sample_interval})
    loop.start()
    latencies = []
    for _ in range(events):
        with changed:
            changed.wait_for(lambda: state["value"] is OwnerState.IDLE, timeout=30)
        time.sleep(random.uniform(0.0, settings.sample_interval))  # any phase of the loop
        moved = inject()
        with changed:
            if changed.wait_for(lambda: state["value"] is OwnerState.BUSY, timeout=10):
                latencies.append(state["busy_at"] - moved)
    stop.set()
    loop.join(5)
    if detector.events is not None:
        detector.events.close()
    return latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def only(opener: Callable[[], object]) -> Callable[[], Wake | None]:
    """Events from this one source, failing loudly if it cannot open."""
    def events() -> Wake:
        source = opener()
        if isinstance(source, str):
            raise RuntimeError(source)
        return Wake([source])  # type: ignore[list-item]
    return events


def polled() -> None:
    return None


Row = tuple[str, str, float | None, float | None, list[float] | None]


def measure(label: str, where: str, seconds: float, away: Settings, present: Settings,
            events: Callable[[], Wake | None], react: tuple[int, Settings, Callable[[], float]]
            | None) -> Row:
    away_share, _ = cost(seconds, away, events)
    present_share, _ = cost(seconds, present, events)
    latencies = None
    if react is not None:
        count, settings, inject = react
        latencies = [1000 * value for value in reaction(count, settings, events, inject)]
    row = (label, where, away_share, present_share, latencies)
    print("  " + format_row(row), flush=True)
    return row


def format_row(row: Row) -> str:
    label, where, away, present, latencies = row
    cells = [f"{label:<22}{where:<34}"]
    cells += [f"{value:>9.3f}" if value is not None else f"{'-':>9}" for value in (away, present)]
    if latencies:
        cells += [f"{percentile(latencies, share):>9.1f}" for share in (0.5, 0.95)]
        cells += [f"{max(latencies):>9.1f}{len(latencies):>8}"]
    else:
        cells += [f"{'-':>9}" * 3 + f"{'-':>8}"]
    return "".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args()
    defaults = Settings.load()
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}; "
          f"poll {defaults.poll_interval} s, sample {defaults.sample_interval} s; "
          f"{args.seconds:g} s per cost figure, {args.events} events per reaction")
    away = Settings.load(idle_after=0.0, **QUIET)  # always idle
    present = Settings.load(idle_after=1e9)  # never away long enough: always busy
    quick = Settings.load(idle_after=0.3, **QUIET)
    rows: list[Row] = []
    saved_display = os.environ.pop("DISPLAY", None)
    rows.append(measure("polling (old loop)", "this machine (terminal fallback)", args.seconds,
                        away, present, polled, None))
    fake = DeviceFile()
    fake_away = Settings.load(idle_after=0.0, require_input=False, **QUIET)
    fake_quick = Settings.load(idle_after=0.3, require_input=False, **QUIET)
    inotify = only(lambda: InotifyEvents.open(fake.directory))
    rows.append(measure("inotify (events)", "fake /dev/input, written to", args.seconds,
                        fake_away, present, inotify, (args.events, fake_quick, fake.move)))
    shutil.rmtree(fake.directory, ignore_errors=True)
    sensor = SensorFile()
    on_file = {"sensor": f"file:{sensor.path}", "sensor_max_age": 0.0}
    file_away = Settings.load(idle_after=0.0, **on_file)
    file_present = Settings.load(idle_after=1e9, **on_file)
    sensor.beat(True)
    try:
        for label, events in (("polling (old loop)", polled),
                              ("sensor-file (events)",
                               only(lambda: FileEvents.open(str(sensor.path))))):
            away_share, _ = cost(args.seconds, file_away, events)
            present_share, _ = cost(args.seconds, file_present, events)
            sensor.beat(False)
            latencies = [1000 * v for v in reaction(args.events, file_away, events, sensor.busy)]
            sensor.beat(True)
            row = (label, "host sensor file, beat 1 s", away_share, present_share, latencies)
            print("  " + format_row(row), flush=True)
            rows.append(row)
    finally:
        sensor.beat(False)
        shutil.rmtree(sensor.directory, ignore_errors=True)
    missing = []
    logind = LogindSignals.open()
    if isinstance(logind, str):
        missing.append(f"logind (events): {logind}")
    else:
        logind.close()
        missing.append("logind (events): reachable, not measured (no way to inject IdleHint)")
    if shutil.which("Xvfb") and ctypes.util.find_library("Xtst"):
        server = Xvfb()
        os.environ["DISPLAY"] = server.name
        try:
            mouse = Mouse(server.name)
            rows.append(measure("polling (old loop)", "X11 display (Xvfb), XTest motion",
                                args.seconds, away, present, polled,
                                (args.events, quick, mouse.move)))
            xinput = only(lambda: XInputEvents.open(server.name))
            rows.append(measure("xinput2 (events)", "X11 display (Xvfb), XTest motion",
                                args.seconds, away, present, xinput,
                                (args.events, quick, mouse.move)))
        finally:
            server.close()
    else:
        missing.append("X11 rows: no Xvfb or libXtst")
    if saved_display is not None:
        os.environ["DISPLAY"] = saved_display
    print()
    print(f"{'backend':<22}{'where':<34}{'% core':>9}{'% core':>9}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'events':>8}")
    print(f"{'':<22}{'':<34}{'away':>9}{'present':>9}{'owner event -> busy decision':>35}")
    for row in rows:
        print(format_row(row))
    for line in missing:
        print(f"not measured: {line}")


if __name__ == "__main__":
    main()
