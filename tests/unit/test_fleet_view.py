"""Flower's Fleet page model: rows from reports (malformed ones too), capacity, the plot."""

from __future__ import annotations

from worker.capacity_history import KEEP, Sample, measure
from worker.fleet_view import fleet_mode, plot, rows

GIB = 1024**3

HONEST = {"node": "a@h", "state": "busy", "mode": "volunteer", "region": "eu",
          "reasons": [{"code": "cpu", "message": "others use 42 % CPU"},
                      {"code": "input", "message": "input 3 s ago"}],
          "consuming": [], "running": 0, "suspended": 1, "age": 1.5,
          "hardware": {"cores": 8, "ram_bytes": 16 * GIB,
                       "gpus": [{"name": "RTX 4090", "memory_bytes": 24 * GIB}]}}
CONSUMING = {"node": "b@h", "state": "idle", "mode": "dedicated", "consuming": ["cpu", "gpu"],
             "hardware": {"cores": 4, "ram_bytes": 8 * GIB, "gpus": []}, "fleet_mode": "emergency"}
MALFORMED = {"node": "c@h", "state": 7, "reasons": "many", "consuming": 5, "hardware": "lots",
             "running": None}


def test_a_row_says_why_the_owner_is_busy_and_what_the_volunteer_earned():
    credit = [{"node": "a@h", "tasks": 3, "cpu_seconds": 12.25, "gpu_seconds": 0.0}]

    row, = rows([HONEST], credit)

    assert row.why == "others use 42 % CPU; input 3 s ago"
    assert row.hardware == "8 cores, 16 GiB, RTX 4090 24 GiB"
    assert (row.state, row.mode, row.region, row.queues) == ("busy", "volunteer", "eu", "(none)")
    assert (row.running, row.suspended, row.age) == ("0", "1", "1.5 s")
    assert row.credit == "3 tasks, 12.2 CPU-s, 0.0 GPU-s"


def test_a_malformed_report_shows_question_marks_and_breaks_nothing():
    row, = rows([MALFORMED], [])

    assert (row.why, row.hardware, row.queues, row.credit) == ("-", "?", "(none)", "-")


def test_capacity_counts_cores_and_gpus_taking_work_and_ignores_nonsense():
    sample = measure([HONEST, CONSUMING, MALFORMED,
                      {"node": "d@h", "consuming": ["cpu"], "hardware": {"cores": "1e9"}},
                      {"node": "e@h", "consuming": ["cpu"], "hardware": {"cores": True}}], at=5.0)

    assert sample == Sample(at=5.0, workers=5, consuming_workers=3, cores=12,
                            consuming_cores=4, gpus=1, consuming_gpus=0)


def test_the_mode_line_counts_the_workers_whose_reports_show_it():
    assert fleet_mode([HONEST, CONSUMING], emergency=True) == "EMERGENCY: 1 of 2 workers"
    assert fleet_mode([HONEST, CONSUMING], emergency=False) == "normal: 1 of 2 workers"


def test_the_plot_runs_from_an_hour_ago_on_the_left_to_now_on_the_right():
    now = 10_000.0
    samples = [Sample(now - KEEP, 1, 0, 8, 0, 0, 0), Sample(now - KEEP / 2, 2, 1, 16, 8, 0, 0),
               Sample(now, 2, 2, 16, 16, 0, 0)]

    drawn = plot(samples, now, width=100, height=50)

    assert drawn.top == 16
    assert drawn.total == "0.0,25.0 50.0,0.0 100.0,0.0"
    assert drawn.consuming == "0.0,50.0 50.0,25.0 100.0,0.0"
