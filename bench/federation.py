"""Federation calculator: the arithmetic of docs/scale.md, from measured broker figures.

    python bench/broker_scale.py --json /tmp/scale.json      # measure first
    python bench/federation.py --measured /tmp/scale.json [--measured another.json]
                               [--fleet 10000,100000,1000000] [--maxclients N]

It reads what ``bench/broker_scale.py`` measured on one Redis (Redis CPU per idle
volunteer, Redis CPU per task/s, memory per volunteer and per task, bytes per
volunteer per second, how long a broadcast takes to reach every volunteer) and
projects: volunteers per broker (CPU, memory and connection limits, with
headroom), brokers per region and in all, memory and network per broker and in
all, status and credit traffic up to the control plane, and how long the
emergency switch takes to reach every volunteer through the tiers (control
plane -> regional relay -> brokers -> volunteers).

Everything printed after the "measured" block is a projection: a linear model
of the measured figures plus the planning assumptions in ``Plan`` (printed
too). Without ``--measured`` the planning defaults of ``Measured`` are used and
the table says so. The functions are pure (no Redis): tests/unit/test_federation.py.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measured:
    """Per-volunteer and per-task broker costs (from broker_scale.py, or planning defaults)."""

    cpu_pct_per_volunteer: float = 0.01  # of one core, idle volunteer (no tasks)
    cpu_pct_per_task_s: float = 0.1  # of one core, per task/s through the broker
    memory_per_volunteer: float = 64 * 1024  # bytes: connections, blocked BRPOP, status key
    memory_per_task: float = 2048  # bytes kept per task until results expire
    net_per_volunteer: float = 1500  # bytes/s in + out, idle volunteer
    broadcast_s_per_volunteer: float = 0.0005  # time for a broadcast to reach all, per volunteer
    source: str = "planning defaults (not measured)"


@dataclass(frozen=True)
class Plan:
    """Planning assumptions: one broker host, the fleet's behaviour, the tiers."""

    broker_cores: float = 1.0  # Redis executes commands on one thread: at most one core
    cpu_headroom: float = 0.5  # use at most half of it (bursts, failover, fork for AOF)
    broker_memory: float = 16 * 2**30  # bytes of RAM on a broker host
    memory_headroom: float = 0.5  # maxmemory at half the host (AOF rewrite forks)
    maxclients: int = 60_000  # raised from Redis's 10,000 (needs ulimit -n above it)
    connections_per_volunteer: int = 9  # a real prefork c=2 worker (broker_scale --calibrate)
    status_bytes: int = 600  # the status document a worker SETs (worker/owner_loop.py)
    status_interval: float = 5.0  # IDLE_ACCEL_STATUS_INTERVAL
    task_s_per_volunteer: float = 0.7 / 600  # 70 % away, 10-minute tasks
    result_expires: float = 86_400.0  # IDLE_ACCEL_RESULT_EXPIRES
    region_rtt: float = 0.150  # control plane -> farthest regional relay, one way + apply
    broker_write_s: float = 0.002  # relay -> one broker: SET mode + PUBLISH, in-region RTT
    relay_parallel: int = 16  # brokers a relay writes to at once
    summary_bytes: int = 2048  # one broker's per-region summary to the control plane
    summary_interval: float = 10.0
    credit_bytes_per_volunteer: int = 64  # a credit delta (node, tasks, cpu s, gpu s)
    credit_interval: float = 60.0
    regions: int = 8


# -- pure arithmetic ----------------------------------------------------------------------------


def fit_slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through (x, y): (slope, intercept)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need at least two points")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x are equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def cpu_pct_per_volunteer(measured: Measured, plan: Plan) -> float:
    """Broker CPU (% of one core) one volunteer costs: idle load plus its share of tasks."""
    return measured.cpu_pct_per_volunteer + measured.cpu_pct_per_task_s * plan.task_s_per_volunteer


def memory_per_volunteer(measured: Measured, plan: Plan) -> float:
    """Broker bytes per volunteer: its connections and keys, plus its results until they expire."""
    results = measured.memory_per_task * plan.task_s_per_volunteer * plan.result_expires
    return measured.memory_per_volunteer + results


def broker_limits(measured: Measured, plan: Plan) -> dict[str, int]:
    """Volunteers one broker holds by each limit: CPU, memory, client connections."""
    limits = {
        "cpu": 100 * plan.broker_cores * plan.cpu_headroom / cpu_pct_per_volunteer(measured, plan),
        "memory": plan.broker_memory * plan.memory_headroom / memory_per_volunteer(measured, plan),
        "connections": plan.maxclients / plan.connections_per_volunteer,
    }
    return {name: math.floor(limit) for name, limit in limits.items()}


def volunteers_per_broker(measured: Measured, plan: Plan) -> tuple[int, str]:
    """How many volunteers one broker holds, and which limit binds (cpu, memory, connections)."""
    limits = broker_limits(measured, plan)
    name = min(limits, key=lambda key: limits[key])
    return limits[name], name


def brokers_needed(volunteers: int, per_broker: int, spare: int = 1) -> int:
    """Brokers for ``volunteers``, plus ``spare`` (N+1) so one can fail or be upgraded."""
    if per_broker <= 0:
        raise ValueError("a broker must hold at least one volunteer")
    if volunteers <= 0:
        return 0
    return math.ceil(volunteers / per_broker) + spare


def broadcast_reach(measured: Measured, volunteers: int) -> float:
    """Seconds for one broker's broadcast to reach all its ``volunteers`` (linear model)."""
    return measured.broadcast_s_per_volunteer * volunteers


def emergency_propagation(measured: Measured, plan: Plan, brokers_per_region: int,
                          volunteers_per_broker_: int) -> float:
    """Seconds from ``fleet emergency on`` to the last volunteer told, through the tiers.

    Control plane -> every regional relay at once (``region_rtt``); each relay
    writes the mode and broadcasts on its brokers, ``relay_parallel`` at a time;
    each broker's broadcast reaches its volunteers. A volunteer that missed it
    reads the mode with its next status report (within ``status_interval``).
    """
    waves = math.ceil(brokers_per_region / plan.relay_parallel)
    return (plan.region_rtt + waves * plan.broker_write_s
            + broadcast_reach(measured, volunteers_per_broker_))


def status_traffic(volunteers: int, plan: Plan) -> float:
    """Bytes/s of status documents volunteers write to their brokers."""
    return volunteers * plan.status_bytes / plan.status_interval


def control_plane_traffic(brokers: int, volunteers: int, plan: Plan) -> float:
    """Bytes/s into the control plane: per-broker summaries plus credit deltas."""
    summaries = brokers * plan.summary_bytes / plan.summary_interval
    credit = volunteers * plan.task_s_per_volunteer * plan.credit_bytes_per_volunteer
    batched = min(credit, volunteers * plan.credit_bytes_per_volunteer / plan.credit_interval)
    return summaries + batched


def project(volunteers: int, measured: Measured, plan: Plan) -> dict[str, Any]:
    """One fleet size: brokers, memory, network, control-plane traffic, emergency time."""
    per_broker, limit = volunteers_per_broker(measured, plan)
    per_region = math.ceil(volunteers / plan.regions)
    brokers_region = brokers_needed(per_region, per_broker)
    on_each = math.ceil(per_region / max(1, brokers_region - 1))  # spare idle until needed
    brokers = brokers_region * plan.regions
    return {
        "volunteers": volunteers,
        "per_broker": per_broker,
        "limit": limit,
        "brokers_per_region": brokers_region,
        "brokers": brokers,
        "broker_memory_gib": on_each * memory_per_volunteer(measured, plan) / 2**30,
        "broker_cpu_pct": on_each * cpu_pct_per_volunteer(measured, plan),
        "broker_net_mbit": on_each * measured.net_per_volunteer * 8 / 1e6,
        "fleet_net_gbit": volunteers * measured.net_per_volunteer * 8 / 1e9,
        "status_mbit_per_broker": status_traffic(on_each, plan) * 8 / 1e6,
        "control_plane_kbit": control_plane_traffic(brokers, volunteers, plan) * 8 / 1e3,
        "emergency_s": emergency_propagation(measured, plan, brokers_region, on_each),
        "emergency_fallback_s": plan.status_interval,
    }


# -- reading broker_scale.py's figures ----------------------------------------------------------


def kept_up(rows: list[dict[str, Any]], share: float = 0.8) -> list[dict[str, Any]]:
    """The rows where the simulator delivered the load: no errors, and idle commands per
    volunteer at least ``share`` of the best row's (a simulator that falls behind sends
    fewer, which would make Redis look cheaper than it is)."""
    clean = [row for row in rows if not row["errors"]]
    if not clean:
        return []
    best = max(row["idle_commands_per_s"] / row["volunteers"] for row in clean)
    return [row for row in clean
            if row["idle_commands_per_s"] / row["volunteers"] >= share * best]


def from_broker_scale(*reports: dict[str, Any]) -> Measured:
    """Per-volunteer and per-task costs from broker_scale.py ``--json`` reports.

    Slopes over the rows where the simulator kept up, of all reports together
    (a fixed cost, such as the producer and Redis's own cron, falls in the
    intercept); the worst row for memory and bytes per volunteer.
    """
    rows = [row for report in reports for row in kept_up(report["rows"])]
    if len(rows) < 2:
        raise ValueError("need at least two rows where the simulator kept up")
    n = [float(row["volunteers"]) for row in rows]
    cpu_slope, _ = fit_slope(n, [row["idle_redis_cpu_pct"] for row in rows])
    per_task = statistics.median(
        max(0.0, row["redis_cpu_pct"] - row["idle_redis_cpu_pct"]) / row["offered_rate"]
        for row in rows)
    reach = [row["broadcast_all_ms"]["max"] for row in rows]
    reach_slope = max(r / 1000 / v for r, v in zip(reach, n, strict=True) if r is not None)
    return Measured(
        cpu_pct_per_volunteer=max(cpu_slope, 0.0),
        cpu_pct_per_task_s=per_task,
        memory_per_volunteer=max(row["memory_per_volunteer_kib"] for row in rows) * 1024,
        memory_per_task=statistics.median(max(0, row["memory_per_task_bytes"]) for row in rows),
        net_per_volunteer=max(row["idle_net_bytes_per_volunteer_s"] for row in rows),
        broadcast_s_per_volunteer=reach_slope,
        source=f"measured: {len(rows)} rows, {int(min(n))}-{int(max(n))} volunteers",
    )


# -- output -------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("volunteers", "per broker (limit)", "brokers/region", "brokers", "GiB/broker",
            "CPU %/broker", "Mbit/s/broker", "fleet Gbit/s", "status Mbit/s/broker",
            "control plane kbit/s", "emergency s (fallback)")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(" | ".join((
            f"{r['volunteers']:,}", f"{r['per_broker']:,} ({r['limit']})",
            str(r["brokers_per_region"]), str(r["brokers"]), f"{r['broker_memory_gib']:.1f}",
            f"{r['broker_cpu_pct']:.0f}", f"{r['broker_net_mbit']:.1f}",
            f"{r['fleet_net_gbit']:.2f}", f"{r['status_mbit_per_broker']:.2f}",
            f"{r['control_plane_kbit']:.0f}",
            f"{r['emergency_s']:.2f} ({r['emergency_fallback_s']:.0f})")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", type=Path, action="append", default=[],
                        help="a broker_scale.py --json report (repeat to pool several runs)")
    parser.add_argument("--fleet", default="10000,100000,1000000,5000000")
    parser.add_argument("--regions", type=int, default=Plan.regions)
    parser.add_argument("--result-expires", type=float, default=Plan.result_expires)
    parser.add_argument("--maxclients", type=int, default=Plan.maxclients)
    parser.add_argument("--connections-per-volunteer", type=int,
                        default=Plan.connections_per_volunteer)
    parser.add_argument("--json", type=Path, help="save the projection here")
    args = parser.parse_args(argv)
    measured = Measured()
    if args.measured:
        measured = from_broker_scale(*(json.loads(path.read_text()) for path in args.measured))
    plan = replace(Plan(), regions=args.regions, result_expires=args.result_expires,
                   maxclients=args.maxclients,
                   connections_per_volunteer=args.connections_per_volunteer)
    print(f"inputs ({measured.source}):")
    for key, value in asdict(measured).items():
        if key != "source":
            print(f"  {key} = {value:.6g}")
    print("planning assumptions:")
    for key, value in asdict(plan).items():
        print(f"  {key} = {value:.6g}")
    limits = broker_limits(measured, plan)
    print("\nprojection: volunteers one broker holds, by limit: "
          + ", ".join(f"{name} {value:,}" for name, value in limits.items()))
    print(f"  per volunteer: {cpu_pct_per_volunteer(measured, plan):.5f} % of a core, "
          f"{memory_per_volunteer(measured, plan) / 1024:.1f} KiB (results included), "
          f"{plan.connections_per_volunteer} connections\n")
    rows = [project(int(n), measured, plan) for n in args.fleet.split(",")]
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"measured": asdict(measured), "plan": asdict(plan),
                                         "limits": limits, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
