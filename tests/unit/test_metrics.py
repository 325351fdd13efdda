"""Prometheus text of the fleet: one series per worker and state, escaped labels, credit."""

from __future__ import annotations

from worker.metrics import render

WORKER = {"node": 'desk"1@pc', "mode": "volunteer", "state": "busy", "region": "eu-west",
          "consuming": [], "running": 0, "suspended": 2, "busy_for": 12.5,
          "reasons": [{"code": "input", "message": "input 2 s ago"}],
          "hardware": {"cores": 8, "gpus": [{"name": "RTX"}]}}


def test_each_worker_gets_every_state_series_and_its_reasons():
    text = render([WORKER], {"cpu": 3}, [{"node": "desk", "tasks": 4, "cpu_seconds": 9.5,
                                          "gpu_seconds": 0.0}])

    node = 'node="desk\\"1@pc"'
    assert f'idle_accel_worker_owner_state{{{node},state="busy"}} 1' in text
    assert f'idle_accel_worker_owner_state{{{node},state="idle"}} 0' in text
    assert f"idle_accel_worker_suspended_tasks{{{node}}} 2" in text
    assert f'idle_accel_worker_reason{{{node},code="input"}} 1' in text
    assert f"idle_accel_worker_gpus{{{node}}} 1" in text
    assert 'idle_accel_workers{mode="volunteer",state="busy"} 1' in text
    assert 'idle_accel_queue_length{queue="cpu"} 3' in text
    assert 'idle_accel_credit_cpu_seconds{node="desk"} 9.5' in text
    assert text.count("# TYPE ") == text.count("# HELP ")
