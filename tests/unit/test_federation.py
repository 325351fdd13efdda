"""The federation calculator's arithmetic (bench/federation.py): pure functions, no Redis."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "federation.py"
_SPEC = importlib.util.spec_from_file_location("bench_federation", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
fed = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = fed  # dataclasses look their module up by name
_SPEC.loader.exec_module(fed)

# Round figures, chosen so every limit can be worked out by hand.
MEASURED = fed.Measured(cpu_pct_per_volunteer=0.005, cpu_pct_per_task_s=0.0,
                        memory_per_volunteer=50 * 1024, memory_per_task=0.0,
                        net_per_volunteer=1000.0, broadcast_s_per_volunteer=0.0001,
                        source="test")
PLAN = fed.Plan(broker_cores=1.0, cpu_headroom=0.5, broker_memory=4 * 2**30,
                memory_headroom=0.5, maxclients=100_000, connections_per_volunteer=3,
                task_s_per_volunteer=0.0, regions=1)


def test_hand_computed_limits_and_the_binding_one():
    # CPU: 50 % of a core / 0.005 % each = 10,000. Memory: 2 GiB / 50 KiB = 41,943.
    # Connections: 100,000 / 3 = 33,333. CPU binds.
    assert fed.volunteers_per_broker(MEASURED, PLAN) == (10_000, "cpu")
    assert fed.broker_limits(MEASURED, PLAN) == {"cpu": 10_000, "memory": 41_943,
                                                 "connections": 33_333}
    # Fewer client slots: 10,000 / 3 = 3,333 binds.
    assert fed.volunteers_per_broker(MEASURED, replace(PLAN, maxclients=10_000)) == (
        3_333, "connections")
    # Memory-bound: 1 MiB per volunteer -> 2 GiB / 1 MiB = 2,048.
    big = replace(MEASURED, memory_per_volunteer=2**20)
    assert fed.volunteers_per_broker(big, PLAN) == (2_048, "memory")


def test_results_kept_until_they_expire_count_per_volunteer():
    # 0.01 tasks/s per volunteer x 86,400 s x 1,000 B = 864,000 B on top of 50 KiB.
    measured = replace(MEASURED, memory_per_task=1000.0)
    plan = replace(PLAN, task_s_per_volunteer=0.01, result_expires=86_400)
    assert fed.memory_per_volunteer(measured, plan) == pytest.approx(50 * 1024 + 864_000)
    # 0.05 % of a core per task/s x 0.01 task/s = 0.0005 % more per volunteer.
    measured = replace(measured, cpu_pct_per_task_s=0.05)
    assert fed.cpu_pct_per_volunteer(measured, plan) == pytest.approx(0.0055)


@pytest.mark.parametrize("field, larger_is_worse", [
    ("cpu_pct_per_volunteer", True), ("memory_per_volunteer", True)])
def test_costlier_volunteers_fit_fewer_per_broker(field, larger_is_worse):
    counts = [fed.volunteers_per_broker(replace(MEASURED, **{field: value}), PLAN)[0]
              for value in (getattr(MEASURED, field) * k for k in (0.5, 1, 2, 4, 8))]
    assert counts == sorted(counts, reverse=larger_is_worse)
    assert counts[0] > counts[-1]


def test_more_headroom_or_cores_fits_more():
    counts = [fed.volunteers_per_broker(MEASURED, replace(PLAN, cpu_headroom=h))[0]
              for h in (0.25, 0.5, 0.75)]
    assert counts == [5_000, 10_000, 15_000]


def test_brokers_needed_rounds_up_and_keeps_a_spare():
    assert fed.brokers_needed(10_000, 10_000) == 2
    assert fed.brokers_needed(10_001, 10_000) == 3
    assert fed.brokers_needed(10_001, 10_000, spare=0) == 2
    assert fed.brokers_needed(0, 10_000) == 0
    with pytest.raises(ValueError):
        fed.brokers_needed(1, 0)


def test_emergency_propagation_adds_up_the_tiers():
    plan = replace(PLAN, region_rtt=0.1, broker_write_s=0.002, relay_parallel=16)
    # 40 brokers, 16 at a time: 3 waves of 2 ms; 5,000 volunteers x 0.1 ms = 0.5 s.
    assert fed.emergency_propagation(MEASURED, plan, 40, 5_000) == pytest.approx(
        0.1 + 3 * 0.002 + 0.5)
    times = [fed.emergency_propagation(MEASURED, plan, 40, n) for n in (1_000, 2_000, 4_000)]
    assert times == sorted(times) and times[0] < times[-1]


def test_status_and_control_plane_traffic():
    plan = replace(PLAN, status_bytes=600, status_interval=5.0, summary_bytes=2048,
                   summary_interval=10.0, credit_bytes_per_volunteer=64, credit_interval=60.0,
                   task_s_per_volunteer=0.001)
    assert fed.status_traffic(10_000, plan) == pytest.approx(1_200_000)
    # 10 brokers x 2048 B / 10 s = 2048 B/s; credit: min(1e6 x 0.001, 1e6 / 60) x 64 B.
    assert fed.control_plane_traffic(10, 1_000_000, plan) == pytest.approx(2048 + 1000 * 64)
    slow = replace(plan, task_s_per_volunteer=1.0)  # capped at one delta per volunteer a minute
    assert fed.control_plane_traffic(10, 1_000_000, slow) == pytest.approx(
        2048 + 1_000_000 / 60 * 64)


def test_fit_slope_recovers_a_line():
    slope, intercept = fed.fit_slope([100, 500, 1000, 2000], [1.5, 3.5, 6.0, 11.0])
    assert slope == pytest.approx(0.005)
    assert intercept == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fed.fit_slope([1, 1], [2, 3])


def test_from_broker_scale_reads_slopes_not_totals():
    def row(n, idle_cpu, cpu, commands_per_volunteer=2.5):
        return {"volunteers": n, "errors": 0, "idle_redis_cpu_pct": idle_cpu,
                "idle_commands_per_s": n * commands_per_volunteer,
                "redis_cpu_pct": cpu, "offered_rate": 50.0, "memory_per_volunteer_kib": 40.0,
                "memory_per_task_bytes": 1500, "idle_net_bytes_per_volunteer_s": 900,
                "broadcast_all_ms": {"max": n * 0.05}}

    measured = fed.from_broker_scale({"rows": [row(1000, 6.0, 8.5), row(2000, 11.0, 13.5),
                                               {**row(3000, 99.0, 99.0), "errors": 5},
                                               row(4000, 12.0, 14.0, 1.5)]})
    # The failed row and the one where the simulator sent 60 % of the load are left out.
    assert measured.cpu_pct_per_volunteer == pytest.approx(0.005)
    assert measured.cpu_pct_per_task_s == pytest.approx(2.5 / 50)
    assert measured.memory_per_volunteer == 40 * 1024
    assert measured.broadcast_s_per_volunteer == pytest.approx(0.00005)
    # Two runs pool their rows: one slope over both, the worst memory of either.
    other = {"rows": [{**row(500, 3.5, 6.0), "memory_per_volunteer_kib": 58.0}]}  # same line
    pooled = fed.from_broker_scale({"rows": [row(1000, 6.0, 8.5), row(2000, 11.0, 13.5)]}, other)
    assert pooled.cpu_pct_per_volunteer == pytest.approx(0.005)
    assert pooled.memory_per_volunteer == 58 * 1024


def test_kept_up_drops_rows_where_the_simulator_fell_behind():
    rows = [{"volunteers": 100, "idle_commands_per_s": 250, "errors": 0},
            {"volunteers": 1000, "idle_commands_per_s": 2100, "errors": 0},
            {"volunteers": 3000, "idle_commands_per_s": 3800, "errors": 0},
            {"volunteers": 500, "idle_commands_per_s": 1250, "errors": 2}]
    assert [r["volunteers"] for r in fed.kept_up(rows)] == [100, 1000]


def test_projection_grows_with_the_fleet():
    rows = [fed.project(n, MEASURED, replace(PLAN, regions=4)) for n in (10_000, 100_000,
                                                                        1_000_000)]
    assert [r["brokers"] for r in rows] == sorted(r["brokers"] for r in rows)
    # 1,000,000 over 4 regions = 250,000 each; 10,000 a broker -> 25 + 1 spare, x 4 regions.
    assert rows[-1]["brokers_per_region"] == 26
    assert rows[-1]["brokers"] == 104
    assert rows[-1]["fleet_net_gbit"] == pytest.approx(1_000_000 * 1000 * 8 / 1e9)
    assert all(r["broker_cpu_pct"] <= 100 * PLAN.cpu_headroom + 1e-9 for r in rows)
    assert not math.isnan(rows[0]["emergency_s"])
