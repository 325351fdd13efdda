"""A private Docker engine and the project's images, built without any image registry.

For the container tests (``tests/containers/``) and for building the images
on a machine that reaches no registry: :class:`DockerEngine` starts Debian's
``dockerd`` as root with its own data, exec and socket paths (no host
firewall rules, no default bridge, cgroupfs), so it never touches another
engine on the machine, and stops it with everything it ran.

:func:`build_images` makes the base image with ``debootstrap`` (Debian
bookworm, minbase, Python 3.11 and pip) and ``docker import``, then builds
``deploy/worker.Dockerfile`` and ``deploy/redis.Dockerfile`` on it with the
host's network (the engine has no NAT for build containers). The machine's
own CA certificates go into the base, since package downloads may pass
through an intercepting proxy. A base root filesystem is kept as a tarball in
``.cache/docker-base`` between runs on one machine (a warm build).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from compute.errors import IdleAccelError

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "idle-accel-base:bookworm"
WORKER_IMAGE = "idle-accelerator:local"
REDIS_IMAGE = "idle-accel-redis:local"
BASE_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
MIRROR = "http://deb.debian.org/debian"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")


def missing_programs() -> list[str]:
    """Programs (and the root user) this module needs that this machine lacks."""
    missing = [name for name in ("dockerd", "docker", "debootstrap") if not shutil.which(name)]
    if os.geteuid() != 0:
        missing.append("root (dockerd and debootstrap run as root)")
    return missing


@dataclass
class DockerEngine:
    """``dockerd`` on ``root``: data, exec root, socket, pid file and log all inside it."""

    root: Path
    process: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``docker``/``docker-compose``/the SDK to reach this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0",
                "COMPOSE_DOCKER_CLI_BUILD": "0"}

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def start(self, timeout: float = 60.0) -> DockerEngine:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [shutil.which("dockerd") or "dockerd", "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "docker.pid"), "-H", self.host,
                 "--iptables=false", "--ip-masq=false", "--bridge=none",
                 "--exec-opt", "native.cgroupdriver=cgroupfs"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise IdleAccelError(f"dockerd exited:\n{self.log_tail()}")
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.3)
        raise IdleAccelError(f"dockerd not answering after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def docker(self, *args: str, check: bool = True, timeout: float = 300,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True,  # noqa: S607
                              timeout=timeout, input=input.decode() if input else None,
                              text=True)
        if check and done.returncode != 0:
            raise IdleAccelError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done

    def stop(self) -> None:
        """Stop every container, then the engine (and its containerd); remove ``root``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            listed = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if listed:
                self.docker("rm", "-f", *listed, check=False, timeout=120)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- images -------------------------------------------------------------------------------

    def import_base(self, cache: Path = REPO / ".cache" / "docker-base") -> None:
        """``BASE_IMAGE`` from a debootstrapped Debian (the cached tarball when there is one)."""
        started = time.monotonic()
        tarball = cache / "bookworm.tar"
        if not tarball.exists():
            cache.mkdir(parents=True, exist_ok=True)
            rootfs = self.root / "rootfs"
            _debootstrap(rootfs)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."],  # noqa: S607
                           check=True, timeout=300)
            partial.replace(tarball)
            shutil.rmtree(rootfs, ignore_errors=True)
            self.timings["debootstrap"] = round(time.monotonic() - started, 1)
        with tarball.open("rb") as data:
            done = subprocess.run(["docker", "import", "-", BASE_IMAGE], env=self.env,  # noqa: S607
                                  stdin=data, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise IdleAccelError(f"docker import: {done.stderr.strip()}")
        self.timings["base"] = round(time.monotonic() - started, 1)

    def build(self, dockerfile: str, tag: str, *args: str) -> None:
        started = time.monotonic()
        self.docker("build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}",
                    "-f", str(REPO / dockerfile), "-t", tag, *args, str(REPO), timeout=900)
        self.timings[tag] = round(time.monotonic() - started, 1)

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


def build_images(engine: DockerEngine) -> dict[str, float]:
    """The base, worker and Redis images on ``engine``; seconds each took."""
    engine.import_base()
    engine.build("deploy/worker.Dockerfile", WORKER_IMAGE)
    engine.build("deploy/redis.Dockerfile", REDIS_IMAGE)
    return dict(engine.timings)


LOCK = REPO / "deploy" / "requirements.lock"

#: Run inside the base image: download what the project needs, print ``name==version
#: --hash=sha256:...`` for each file (the project itself left out).
_LOCK_SCRIPT = r"""
set -eu
cp -r /src /tmp/project
pip download --quiet --no-cache-dir --dest /tmp/dl /tmp/project >&2
cd /tmp/dl
python - <<'PY'
import hashlib, pathlib, re
lines = []
for path in sorted(pathlib.Path(".").iterdir()):
    stem = path.name
    if stem.endswith(".whl"):
        name, version = stem.split("-")[:2]
    else:
        name, version = re.match(r"(.+)-([^-]+)\.(?:tar\.gz|zip)$", stem).groups()
    name = re.sub(r"[-_.]+", "-", name).lower()
    if name == "idle-accelerator":
        continue
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    lines.append(f"{name}=={version} --hash=sha256:{digest}")
print("\n".join(lines))
PY
"""


def lock_requirements(engine: DockerEngine) -> str:
    """``deploy/requirements.lock``: every package the worker image installs, with its hash.

    Resolved inside the base image (its Python, its platform), so the hashes are
    those of the files the image build downloads.
    """
    done = engine.docker("run", "--rm", "--network", "host", "-v", f"{REPO}:/src:ro",
                         "--entrypoint", "sh", BASE_IMAGE, "-c", _LOCK_SCRIPT, timeout=900)
    header = ("# The worker image's Python packages, pinned with their SHA-256 (pip\n"
              "# --require-hashes). Made by `python -m worker.local.docker_engine lock` inside\n"
              "# the base image; run it again after changing the dependencies in pyproject.toml.\n")
    LOCK.write_text(header + done.stdout.strip() + "\n")
    return LOCK.read_text()


def _debootstrap(rootfs: Path) -> None:
    shutil.rmtree(rootfs, ignore_errors=True)
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",  # noqa: S607
                           "bookworm", str(rootfs), MIRROR],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise IdleAccelError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
    # Downloads in image builds may pass through this machine's intercepting proxy.
    local = sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []
    for certificate in local:
        shutil.copy(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
    if local:
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"],  # noqa: S607
                       check=True, capture_output=True, timeout=120)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()  # pip installs into the image's own Python
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / leftover).glob("*"):
            if item.is_file():
                item.unlink()


def _unmount_under(root: Path) -> None:
    """Unmount what the engine left mounted under ``root`` (overlays, netns), deepest first."""
    prefix = str(root.resolve()) + "/"
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)  # noqa: S607


def main(argv: list[str]) -> int:
    """``python -m worker.local.docker_engine build|lock [ROOT]``: on a private engine."""
    if not argv or argv[0] not in ("build", "lock"):
        print("usage: python -m worker.local.docker_engine build|lock [ENGINE_FOLDER]")
        return 2
    missing = missing_programs()
    if missing:
        print(f"missing: {', '.join(missing)}")
        return 1
    engine = DockerEngine(Path(argv[1]) if len(argv) > 1 else REPO / ".cache" / "engine")
    try:
        engine.start()
        if argv[0] == "lock":
            engine.import_base()
            lock_requirements(engine)
            print(f"wrote {LOCK}")
        else:
            print(build_images(engine))
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
