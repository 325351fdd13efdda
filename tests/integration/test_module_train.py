"""Training on real workers: DiLoCo rounds of MiniLM replicas, a real Redis, the project's CLI.

- one replica, outer lr 1, no momentum: the rounds equal plain local training
  step for step (the same seed; atol 1e-6);
- two replicas on two workers reach the single-process baseline's validation
  accuracy (within 1 point) on as many samples, and the job writes a model
  folder that sentence-transformers loads, a plot and its record;
- an owner coming back mid-round costs nothing beyond the last checkpoint: the
  replica resumes on another worker and the round closes.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from compute import jobs, plans, train, train_loop, train_spec
from compute.assets import make_topics
from compute.train_store import read_rows
from worker.local.worker_process import cli_command

from .gating import Owner, received
from .waiting import wait_for

TOPICS = Path(make_topics.__file__).with_name("topics.csv")
TIMEOUT = 600
ONE_THREAD = {"IDLE_ACCEL_TASK_THREADS": "1"}


def team_worker(workers, name: str = "team", concurrency: int = 1):
    """The team's own machine: it starts and closes rounds (the ``team`` queue)."""
    return workers(name, "--mode", "dedicated", "--queues", "team", "--concurrency",
                   str(concurrency), env=ONE_THREAD)


def finished(app, job: jobs.Job, timeout: float = TIMEOUT) -> dict:
    return app.AsyncResult(job.assemble).get(timeout=timeout)


def test_one_replica_with_outer_lr_1_and_no_momentum_equals_local_training(
        app, workers, tmp_path):
    team_worker(workers)
    workers("replica", "--concurrency", "1", env=ONE_THREAD)
    settings = {"rounds": 3, "replicas": 1, "inner_steps": 4, "batch_size": 8, "lr": 3e-4,
                "outer_lr": 1.0, "outer_momentum": 0.0, "seed": 5,
                "options": {"train_layers": 1, "max_length": 32, "validation": 0.05}}
    job = plans.train_classifier(app, str(TOPICS), str(tmp_path / "model"), **settings)
    result = finished(app, job)

    torch.set_num_threads(1)
    spec = train_spec.check({"job": job.id, "data": str(TOPICS), "output": "/unused",
                             **settings})
    val_losses = []
    local = train_loop.local_training(
        spec, 12, every=4, report=lambda step, run, loss: val_losses.append(
            run.model.evaluate(train_loop.load_data(spec).validation)["loss"]))
    rows = read_rows(tmp_path / "model" / "metrics.jsonl")
    assert [row["round"] for row in rows] == [0, 1, 2] and result["rounds"] == 3
    assert [row["val_loss"] for row in rows] == pytest.approx(val_losses, abs=1e-6)
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    encoder = dict(SentenceTransformer(str(tmp_path / "model"), device="cpu").named_parameters())
    head = load_file(str(tmp_path / "model" / "classifier.safetensors"))
    trained = {**{f"head.{k}": v for k, v in head.items()},
               **{f"encoder.{k}": v for k, v in encoder.items()}}
    assert len(local.params) == 17  # the top layer's 16 tensors but its key bias, the head's 2
    for name, param in local.params.items():
        torch.testing.assert_close(trained[name], param.detach(), atol=1e-6, rtol=0)


def test_two_replicas_on_two_workers_match_one_process_and_save_a_loadable_model(
        app, workers, tmp_path):
    team_worker(workers, concurrency=2)  # the baseline, and the rounds' closes beside it
    nodes = {workers(name, "--concurrency", "1", env=ONE_THREAD).node
             for name in ("train-a", "train-b")}
    output = tmp_path / "model"
    job = plans.train_classifier(app, str(TOPICS), str(output), rounds=5, replicas=2,
                                 inner_steps=20, batch_size=16, lr=5e-4, baseline=True,
                                 options={"max_length": 32})
    result = finished(app, job)

    wait_for(lambda: len(read_rows(output / "baseline.jsonl")) == 5, timeout=TIMEOUT,
             what="the baseline's 5 rows")
    rows, base = read_rows(output / "metrics.jsonl"), read_rows(output / "baseline.jsonl")
    assert [row["samples"] for row in rows] == [row["samples"] for row in base]
    assert rows[-1]["val_accuracy"] >= base[-1]["val_accuracy"] - 0.01, (rows, base)
    assert rows[-1]["val_accuracy"] > 0.8 and rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert set(result["volunteers"]) == nodes and result["refused"] == 0
    assert all(row["replicas"] == [0, 1] for row in rows)

    record = jobs.status(app, jobs.load(app, job.id))
    assert record["state"] == "SUCCESS" and record["done"] == record["total"] == 10
    assert record["details"]["round"] == 5 and set(record["details"]["volunteers"]) == nodes
    png = (output / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1000, 400)
    assert not (output / "rounds").exists()

    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(output), device="cpu").encode(["a goal"]).shape == (1, 384)
    labels = json.loads((output / "labels.json").read_text())
    said = app.signature("compute.train.predict", (str(output), [
        "The striker scored twice in the final", "The chef roasted a loaf of sourdough",
        "Heavy rain flooded the valley by morning", "The server crashed after a memory leak",
    ])).apply_async().get(timeout=120)
    assert said["labels"] == ["sport", "cooking", "weather", "tech"] and len(labels) == 4


def test_an_owner_coming_back_mid_round_costs_nothing_beyond_the_last_checkpoint(
        app, workers, tmp_path):
    team_worker(workers)
    owner = Owner.away(tmp_path / "owner")
    first = workers("train-owner", "--sensor", owner.flag, "--sensor-max-age", "0",
                    "--idle-after", "0", "--preempt-after", "1", "--concurrency", "1",
                    env=ONE_THREAD)
    job = plans.train_classifier(app, str(TOPICS), str(tmp_path / "model"), rounds=2,
                                 replicas=1, inner_steps=40, checkpoint_every=5, batch_size=8,
                                 options={"max_length": 32, "validation": 0.05})
    replica = app.AsyncResult(train.replica_id(job.id, 0, 0))
    wait_for(lambda: replica.state == "PROGRESS" and replica.info["done"] >= 12,
             timeout=TIMEOUT, what="12 steps of round 0")
    owner.busy()
    done_then = replica.info["done"]
    wait_for(lambda: "preempt" in first.log_text().lower(), timeout=60, what="preempted")

    second = workers("train-other", "--concurrency", "1", env=ONE_THREAD)
    value = replica.get(timeout=TIMEOUT)
    assert value["hostname"] == second.node
    assert 10 <= value["resumed_from"] <= done_then and value["resumed_from"] % 5 == 0
    result = finished(app, job)
    rows = read_rows(tmp_path / "model" / "metrics.jsonl")
    assert [row["replicas"] for row in rows] == [[0], [0]] and result["rounds"] == 2
    assert received([first], replica.id) == 1  # ended there once, then run elsewhere


def test_the_command_line_trains_follows_and_predicts(app, workers, broker_env, tmp_path):
    """`submit train-classifier` sends, follows to the end and prints the result; `submit
    predict` labels with the folder it wrote; a bad CSV is one line naming the problem."""
    team_worker(workers)
    workers("cli-replica", "--concurrency", "1", env=ONE_THREAD)
    env = {**os.environ, **broker_env, "COLUMNS": "200"}
    output = tmp_path / "bow"
    done = subprocess.run(
        [*cli_command(), "submit", "train-classifier", str(TOPICS), "--output", str(output),
         "--model", "bow-classifier", "--rounds", "3", "--replicas", "2", "--inner-steps", "20",
         "--lr", "0.05", "--timeout", "300"],
        env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(train): 6 parts sent" in done.stdout and "SUCCESS, 6/6 parts done" in done.stdout
    assert json.loads(done.stdout[done.stdout.index("{"):])["rounds"] == 3
    said = subprocess.run([*cli_command(), "submit", "predict", str(output),
                           "The referee sent off the captain in the derby"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert said.returncode == 0, said.stdout + said.stderr
    assert json.loads(said.stdout[said.stdout.index("{"):])["labels"] == ["sport"]

    assert "no live worker serves" not in done.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,topic\nhello,a\n")
    refused = subprocess.run([*cli_command(), "submit", "train-classifier", str(bad),
                              "--output", str(tmp_path / "x")], env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0
    assert "must start with the header 'text,label'" in refused.stdout + refused.stderr


def test_a_job_whose_model_no_worker_has_fails_at_once_naming_it(app, workers, tmp_path):
    team_worker(workers)
    job = plans.train_classifier(app, str(TOPICS), str(tmp_path / "m"), model="team.nope")
    outcome = app.AsyncResult(job.assemble)
    outcome.get(timeout=120, propagate=False)
    assert outcome.state == "FAILURE"
    assert "no model 'team.nope' on this worker" in str(outcome.result)
    assert jobs.status(app, jobs.load(app, job.id))["state"] == "FAILURE"


def test_submitting_with_no_worker_on_the_team_queue_says_so(app, broker_env, tmp_path):
    env = {**os.environ, **broker_env, "COLUMNS": "200"}
    done = subprocess.run([*cli_command(), "submit", "train-classifier", str(TOPICS),
                           "--output", str(tmp_path / "m"), "--no-wait"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no live worker serves the queue 'team'" in done.stdout
    assert "(train): 20 parts sent" in done.stdout  # sent all the same: it waits
