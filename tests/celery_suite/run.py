"""Run Celery's own integration suite against ``idle-accel worker`` (a standing check).

    python -m tests.celery_suite.run [PYTEST ARGS...] [t/integration/FILE[::CLASS]...]

Fetches the sdist of the installed Celery (its ``t/integration`` is not in
the wheel) into ``.cache/celery-suite``, unpacks ``t/`` into a temporary
folder, swaps the suite's in-process worker for the project's own worker
process (``external_worker.py``), starts a private Redis on a free loopback
port (the suite's own Redis helper takes no password, so this one has none
and lives only for the run), and runs the chosen files with the cases in
``differences.py`` left out. Exits with pytest's status.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import celery

from tests.celery_suite.differences import LEFT_OUT
from worker.local.redis_server import find_binary

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "celery-suite"
HERE = Path(__file__).resolve().parent

#: What every test run covers (about 5 minutes on 2 cores): the task and
#: inspect suites, and the canvas suite's chains (links, errbacks, ETA,
#: replacement). Its groups, result sets and chords take ~25 minutes more here.
DEFAULT_TARGETS = [
    "t/integration/test_tasks.py",
    "t/integration/test_inspect.py",
    "t/integration/test_canvas.py::test_chain",
]


def sdist() -> Path:
    """The sdist of the installed Celery, downloaded once into the cache."""
    name = f"celery-{celery.__version__}.tar.gz"
    found = CACHE / name
    if not found.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"celery=={celery.__version__}", "-d",
                        str(CACHE)], check=True, timeout=600)
    return found


def prepare(root: Path) -> None:
    """Unpack the suite's ``t/`` into ``root`` with the project's worker in place of Celery's."""
    with tarfile.open(sdist()) as archive:
        prefix = f"celery-{celery.__version__}/"
        members = [member for member in archive.getmembers()  # the suite and its pytest
                   if member.name.startswith(prefix + "t/")  # settings (test_* classes)
                   or member.name == prefix + "pyproject.toml"]
        for member in members:
            member.name = member.name[len(prefix):]
        archive.extractall(root, members=members, filter="data")
    shutil.copy(HERE / "external_worker.py", root / "t" / "integration" / "_idle_accel_worker.py")
    with open(root / "t" / "integration" / "conftest.py", "a") as conftest:
        conftest.write("\nfrom t.integration._idle_accel_worker import "
                       "celery_session_worker  # noqa: E402,F401 (idle-accel)\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Per case: test_chord::test_disabling_flag_allow_error_cb_on_chord_header waits 7 x 21 s
#: by design (each header checks that a second errback does not come within 10 s).
CASE_TIMEOUT = 300


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="celery-suite-"))
    prepare(root)
    port = free_port()
    redis = subprocess.Popen([find_binary(), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the suite's redis-server did not start")
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        env = {**os.environ, "TEST_BROKER": url, "TEST_BACKEND": url,
               "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port),
               "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
               "SUITE_WORKER_LOG": str(root / "worker.log")}
        deselect = [arg for node in LEFT_OUT for arg in ("--deselect", node)]
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                   "-p", "celery.contrib.pytest", "-o", "addopts=", "--rootdir", str(root),
                   "--timeout", str(CASE_TIMEOUT), *deselect, *argv,
                   *([] if any(arg.startswith("t/") for arg in argv) else DEFAULT_TARGETS)]
        code = subprocess.run(command, cwd=root, env=env).returncode
        if code != 0:
            print(f"--- worker log: {root / 'worker.log'}", file=sys.stderr)
        return code
    finally:
        redis.terminate()
        redis.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
