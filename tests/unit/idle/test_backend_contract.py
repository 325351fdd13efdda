"""Which signals each OS backend provides (the psutil test_contracts way)."""

from __future__ import annotations

import sys

import pytest

from worker.idle import _linux, _macos, _windows, backend

BACKENDS = {"linux": _linux, "win32": _windows, "darwin": _macos}


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_offers_input_idle_and_screen_lock(name):
    module = BACKENDS[name]

    assert callable(module.input_probes) and callable(module.lock_probes)


def test_input_probes_per_os():
    names = {os: [probe for probe, *_ in module.input_probes()] for os, module in BACKENDS.items()}

    assert names == {"linux": ["logind", "x11", "mutter", "devices"],
                     "win32": ["GetLastInputInfo"], "darwin": ["HIDIdleTime"]}
    assert [p for p, *_ in _linux.lock_probes()] == ["logind"]
    assert [p for p, *_ in _windows.lock_probes()] == ["input desktop"]
    assert [p for p, *_ in _macos.lock_probes()] == ["IOConsoleUsers"]


def test_probes_that_talk_to_other_processes_are_marked_as_blocking():
    blocking = {os: [name for name, _, may_block in module.input_probes() + module.lock_probes()
                     if may_block] for os, module in BACKENDS.items()}

    assert blocking == {"linux": ["logind", "x11", "mutter", "logind"], "win32": [],
                        "darwin": []}


def test_only_linux_lists_children_without_a_full_process_scan():
    assert hasattr(_linux, "children")
    assert not hasattr(_windows, "children") and not hasattr(_macos, "children")


def test_backend_is_picked_for_this_os():
    expected = next(module for prefix, module in BACKENDS.items()
                    if sys.platform.startswith(prefix))

    assert backend.current is expected
