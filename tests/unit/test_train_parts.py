"""Training's pure parts: the spec's checks, the data order, the tensor files and the plot."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compute import train_models, train_spec, train_store
from compute.errors import InvalidArgument
from compute.train_plot import draw

JOB = "12345678-1234-5678-1234-567812345678"
BASE = {"job": JOB, "output": "/tmp/out", "data": "/tmp/data.csv"}


def test_a_spec_gets_the_papers_outer_settings_and_all_replicas_as_quorum():
    spec = train_spec.check({**BASE, "replicas": 3})
    assert (spec["outer_lr"], spec["outer_momentum"], spec["nesterov"]) == (0.7, 0.9, True)
    assert spec["quorum"] == 3 and spec["queue"] == "team" and spec["model"] == "minilm-classifier"
    assert train_spec.replica_queue({**spec, "gpu": True, "region": "eu-west"}) == "gpu@eu-west"


@pytest.mark.parametrize(("change", "message"), [
    ({"rounds": 0}, "'rounds' must be a whole number from 1 to 10000"),
    ({"lr": float("nan")}, "'lr' must be a number"),
    ({"lr": True}, "'lr' must be a number"),
    ({"quorum": 3}, "'quorum' must be a whole number from 1 to the replicas"),
    ({"output": "model/"}, "'output' must be an absolute file path"),
    ({"data": "s3://bucket/x.csv"}, "'data' must be an absolute file path"),
    ({"job": "../../etc"}, "'job' must be a job id"),
    ({"model": "../x"}, "'model' must be a registered name"),
    ({"queue": "Team!"}, "'queue'"),
    ({"optimizer": "sgd"}, "unknown settings"),
    ({"options": {"x": "y" * 5000}}, "'options' must be a JSON object of at most"),
    ({"lr": 1.0, "weight_decay": 1.0}, "'lr' times 'weight_decay' must be below 1"),
])
def test_a_bad_setting_is_refused_naming_it(change, message):
    with pytest.raises(InvalidArgument, match=f"^t: argument 'spec': .*{message}"):
        train_spec.check({**BASE, **change}, "t")


def test_batches_are_a_pure_function_of_seed_and_step_and_cover_each_epoch():
    rows = list(range(10))
    first_epoch = [r for step in range(5) for r in train_models.batch(rows, step, 2, "s")]
    assert sorted(first_epoch) == rows  # every row once per epoch
    assert train_models.batch(rows, 7, 3, "s") == train_models.batch(rows, 7, 3, "s")
    assert train_models.batch(rows, 0, 10, "s") != train_models.batch(rows, 0, 10, "t")


def test_hashed_words_are_the_same_in_every_process():
    """Not Python's hash(), which each process salts: a model trained on one volunteer
    must read the same buckets on every other."""
    code = ("from compute.train_models import hashed_words; "
            "print(hashed_words('Goal! Goal again', 4096))")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
            for seed in ("1", "2")}
    assert seen == {f"{train_models.hashed_words('Goal! Goal again', 4096)}\n"}
    assert len(train_models.hashed_words("Goal! Goal again", 4096)) == 5  # 3 words, 2 pairs
    assert train_models.hashed_words("", 16) == [0]


@pytest.mark.parametrize(("text", "message"), [
    ("words,tag\na,b\n", "must start with the header 'text,label'"),
    ("text,label\na,x\nb,x\n", "1 label"),
    ("text,label\na,\n", "line 2: a row is text,label"),
])
def test_a_bad_csv_is_refused_with_its_line(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        train_models.csv_dataset(str(path), {}, 0)


def test_the_csv_split_is_seeded_and_holds_out_the_share(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(100)))
    data = train_models.csv_dataset(str(path), {"validation": 0.25}, 3)
    assert (len(data.train), len(data.validation), data.labels) == (75, 25, ["a", "b"])
    assert data.validation == train_models.csv_dataset(str(path), {"validation": 0.25},
                                                       3).validation
    with pytest.raises(ValueError, match=r"'validation' must be a number from 0\.05 to 0\.5"):
        train_models.csv_dataset(str(path), {"validation": 0.9}, 3)


def test_tensor_files_round_trip_and_are_written_whole(tmp_path):
    path = tmp_path / "r" / "t.safetensors"
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    train_store.save(path, tensors)
    assert torch.equal(train_store.load(path, 24)["w"], tensors["w"])
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temporary left


def test_a_pickle_posing_as_tensors_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "delta-00.safetensors"
    path.write_bytes(pickle.dumps(Trap()))
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.safetensors")  # a zip of pickles
    for bad in (path, tmp_path / "torch.safetensors"):
        with pytest.raises(train_store.Unreadable, match="no safetensors file"):
            train_store.load(bad, 8)
    assert not marker.exists()


def test_a_file_much_larger_than_the_model_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.safetensors"
    train_store.save(path, {"w": torch.zeros(300_000)})
    with pytest.raises(train_store.Unreadable, match="the model's tensors take 8"):
        train_store.load(path, 8)
    with pytest.raises(train_store.Unreadable, match="does not exist"):
        train_store.load(tmp_path / "none.safetensors", 8)


def test_the_plot_is_a_png_with_the_baseline_beside(tmp_path):
    rows = [{"round": r, "train_loss": 1 / (r + 1), "val_loss": 1.2 / (r + 1),
             "val_accuracy": 0.5 + r / 10} for r in range(3)]
    path = tmp_path / "training.png"
    draw(rows, rows[:2], path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    draw([{"round": "x", "val_accuracy": None}], [], path)  # rows it cannot plot: skipped
    assert path.exists()
