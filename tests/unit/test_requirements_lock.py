"""deploy/requirements.lock pins every dependency of the worker image, each with its hash."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^([a-z0-9-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


def _name(requirement: str) -> str:
    bare = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


def test_every_runtime_dependency_is_pinned_with_a_hash() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [line for line in (REPO / "deploy/requirements.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    pinned = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"not name==version --hash=sha256:...: {line!r}"
        pinned[match.group(1)] = match.group(2)
    missing = {_name(r) for r in project["dependencies"]} - set(pinned)
    assert not missing, f"remake the lock (python -m worker.local.docker_engine lock): {missing}"
    assert "idle-accelerator" not in pinned  # the project itself is built from the context
