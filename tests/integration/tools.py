"""System programs some tests drive (Debian packages that `.ci/run` installs)."""

from __future__ import annotations

import os
import shutil

import pytest


def require(name: str) -> str:
    """The path of program ``name``.

    Missing under CI (``.ci/run`` exports ``CI=1`` after installing it) is a
    failure; elsewhere the test is skipped, saying which package to install.
    """
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing: .ci/run installs it")
    pytest.skip(f"{name} is not installed on this machine (.ci/run installs it)")
