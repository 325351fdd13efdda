"""What one bad volunteer can do to a training job: move the model no further than an honest one.

A replica runs on a stranger's PC: its Δ file, its result and its timing are
its own. Here the round's close (a real Redis, the task run in this process
as a team worker would) meets a Δ scaled a thousandfold, NaNs, a pickle, a
file of another model, a result that lies about its name and loss, and a
replica that arrives after the close.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from compute import diloco, keys, train, train_loop, train_rounds, train_spec
from compute.train_store import Store, load, read_rows, save

JOB = "0badc0de-0000-4000-8000-000000000001"


@pytest.fixture
def round_zero(app, tmp_path):
    """A 1-round job of 3 replicas (the small bag-of-words model), round 0's θ written."""
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(
        f"{'goal match team' if i % 2 else 'rain storm cloud'} {i},{'ab'[i % 2]}\n"
        for i in range(60)))
    spec = train_spec.check({"job": JOB, "output": str(tmp_path / "out"),
                             "data": str(tmp_path / "d.csv"), "model": "bow-classifier",
                             "rounds": 1, "replicas": 3, "inner_steps": 5, "batch_size": 4,
                             "lr": 0.05, "outer_lr": 0.7, "outer_momentum": 0.9})
    run = train_loop.build(spec, train_loop.load_data(spec), "cpu")
    save(Store(spec["output"]).global_weights(0), run.weights())
    return spec


def run_replica(app, spec, index):
    return app.tasks["compute.train.replica"].apply(
        (spec, 0, index), task_id=train.replica_id(JOB, 0, index)).get()


def arrive(app, spec, index, result):
    return app.tasks["compute.train.close_round"].apply((result, spec, 0, index)).get()


def test_a_delta_beyond_adamws_reach_is_refused_and_the_round_closes_on_the_honest_ones(
        app, round_zero):
    spec, store = round_zero, Store(round_zero["output"])
    honest = [run_replica(app, spec, i) for i in range(3)]
    theta = load(store.global_weights(0))
    deltas = [load(store.delta(0, i)) for i in range(2)]
    save(store.delta(0, 2), {name: t * 1000 for name, t in load(store.delta(0, 2)).items()})

    assert arrive(app, spec, 0, honest[0])["arrived"] == 1
    assert arrive(app, spec, 1, honest[1])["arrived"] == 2
    result = arrive(app, spec, 2, honest[2])

    (row,) = read_rows(store.metrics)
    assert row["replicas"] == [0, 1] and [r["replica"] for r in row["refused"]] == [2]
    assert "move farther than AdamW can" in row["refused"][0]["why"]
    assert result["refused"] == 1 and app.AsyncResult(JOB).get(timeout=5) == result
    expected, _ = diloco.outer_step(theta, diloco.average(deltas), None, train_spec.outer(spec))
    from safetensors.torch import load_file

    saved = load_file(str(store.root / "classifier.safetensors"))
    torch.testing.assert_close(saved["weight"], expected["weight"], atol=1e-7, rtol=0)


@pytest.mark.parametrize("poison", ["nan", "pickle", "other model", "empty"])
def test_a_malformed_delta_is_refused_naming_why(app, round_zero, tmp_path, poison):
    spec, store = round_zero, Store(round_zero["output"])
    for i in range(3):
        run_replica(app, spec, i)
    path = store.delta(0, 1)
    if poison == "nan":
        save(path, {"weight": torch.full_like(load(path)["weight"], float("nan"))})
    elif poison == "pickle":
        marker = tmp_path / "unpickled"
        path.write_bytes(pickle.dumps(marker))
    elif poison == "other model":
        save(path, {"weight": torch.zeros(3, 3), "extra": torch.zeros(1)})
    else:
        path.write_bytes(b"")
    for i in range(3):
        arrive(app, spec, i, {"hostname": f"v{i}@pc", "loss": 0.5})
    (row,) = read_rows(store.metrics)
    assert row["replicas"] == [0, 2] and row["refused"][0]["replica"] == 1
    assert row["refused"][0]["hostname"] == "v1@pc"
    why = {"nan": "NaN", "pickle": "no safetensors file", "other model": "not the model's",
           "empty": "no safetensors file"}[poison]
    assert why in row["refused"][0]["why"]


def test_a_volunteers_result_cannot_name_another_replica_or_smuggle_values(
        app, broker, round_zero):
    spec = round_zero
    for i in range(3):
        run_replica(app, spec, i)
    lie = {"replica": 2, "round": 7, "hostname": "evil\x1b[2J\n" + "x" * 5000, "loss": "NaN",
           "late": False}
    assert arrive(app, spec, 0, lie)["arrived"] == 1
    with broker.client() as client:
        (recorded,) = client.hgetall(keys.train_arrived(JOB, 0)).items()
    assert recorded[0] == b"0"  # the link's replica number, not the result's claim
    assert json.loads(recorded[1]) == {"hostname": "evil2J" + "x" * 94, "loss": None,
                                       "peak_rss_mb": None, "seconds": None}


def test_a_replica_arriving_after_the_close_is_late_and_unused(app, broker, round_zero):
    spec = {**round_zero, "quorum": 2}
    results = [run_replica(app, spec, i) for i in range(3)]
    arrive(app, spec, 0, results[0])
    arrive(app, spec, 1, results[1])
    (row,) = read_rows(Store(spec["output"]).metrics)
    assert row["replicas"] == [0, 1] and row["late"] == [2]
    assert arrive(app, spec, 2, results[2])["late"] is True
    with broker.client() as client:
        assert train_rounds.count(client, JOB, 0) == 2
    assert len(read_rows(Store(spec["output"]).metrics)) == 1  # no second close
    # and the late replica, run again now, does no work at all
    assert run_replica(app, spec, 2)["late"] is True


def test_only_one_task_closes_a_round(broker):
    with broker.client() as client:
        assert train_rounds.arrive(client, JOB, 3, 0, {"hostname": "a", "loss": 1.0}, 60) == 1
        assert train_rounds.close(client, JOB, 3, "closer-1", 60) == {
            0: {"hostname": "a", "loss": 1.0}}  # the row as it was recorded
        assert train_rounds.close(client, JOB, 3, "closer-2", 60) is None
        assert train_rounds.close(client, JOB, 3, "closer-1", 60) is not None  # redelivered
        assert train_rounds.arrive(client, JOB, 3, 1, {}, 60) == train_rounds.LATE


def test_a_deadline_after_the_job_ended_sends_nothing_even_when_its_keys_expired(
        app, broker, round_zero):
    spec = round_zero
    for i in range(3):
        arrive(app, spec, i, run_replica(app, spec, i))
    with broker.client() as client:
        client.delete(keys.train_arrived(JOB, 0), keys.train_closed(JOB, 0))  # expired
        deadline = app.tasks["compute.train.close_round"].apply((None, spec, 0, -1)).get()
        assert deadline["closed_by_another"] is True
        assert client.llen("team") == 0  # no deadline re-armed for a job that ended
