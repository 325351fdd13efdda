"""Training on volunteers' idle PCs: DiLoCo rounds of checkpointed, preemptible replicas.

``idle-accel submit train-classifier data.csv --output model/`` (or
:func:`compute.plans.train`) sends ``start``; from there the job runs itself:

1. ``start`` (team queue) builds the model, writes round 0's θ and sends the
   round: M ``replica`` tasks and a deadline (a ``close_round`` due then).
2. ``replica`` (``cpu``, or ``gpu`` with ``Needs(gpu=True)``; volunteers run
   it) loads θ, takes H AdamW steps on its shard, checkpoints every few
   steps (``CheckpointTask``: a preempted replica resumes on another worker)
   and writes Δ = θ − θ_local. Its link is ``close_round`` with its number.
3. ``close_round`` (team queue) records the arrival; at the quorum (or at
   the deadline, with what arrived) one of them closes the round
   (``compute.train_rounds``): each Δ is checked (``compute.diloco.check``),
   averaged, the outer Nesterov step writes θ of the next round, the
   validation set is scored, a metrics row and the plot are written, the job
   record is updated, and the next round is sent. After the last round the
   model is saved to the output folder and the job's result is stored.

``baseline`` trains the same model in one process on the same number of
samples, for the plot and the benchmark. ``predict`` labels texts with a
saved model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compute import diloco, jobs, train_loop, train_rounds, train_spec, validate
from compute.errors import InvalidArgument
from compute.sdk import compute_task, task_threads
from compute.train_store import Store, Unreadable, append_row, load, read_rows, save

log = logging.getLogger(__name__)

MAX_TEXTS = 1000
_HOST = re.compile(r"[^A-Za-z0-9@._:-]")


def device(gpu: bool) -> str:
    import torch

    torch.set_num_threads(task_threads())
    return "cuda" if gpu and torch.cuda.is_available() else "cpu"


def replica_id(job: str, number: int, replica: int) -> str:
    """The task id of replica ``replica`` of round ``number``: known before it is sent."""
    return str(uuid.uuid5(uuid.UUID(job), f"round {number} replica {replica}"))


def _checked(task: Any, spec: Any, number: Any, replica: Any | None = None
             ) -> tuple[dict[str, Any], int, int]:
    spec = train_spec.check(spec, task.name)
    number = validate.count(task.name, "number", number, minimum=0,
                            maximum=spec["rounds"] - 1)
    if replica is not None:
        replica = validate.count(task.name, "replica", replica, minimum=-1,
                                 maximum=spec["replicas"] - 1)
    return spec, number, replica if replica is not None else -1


def _fails(task: Any, exc: Exception, what: str = "spec") -> InvalidArgument:
    return InvalidArgument(f"{task.name}: argument '{what}': {exc}")


def _setup(task: Any, spec: dict[str, Any], number: int = 0, shards: int = 1, *,
           fresh: bool = False) -> train_loop.Replica:
    """The model (this process's last one when it is the same: the caller loads θ)."""
    make = train_loop.build if fresh else train_loop.reuse
    try:
        return make(spec, train_loop.load_data(spec), device(spec["gpu"]), number=number,
                    shards=shards)
    except ValueError as exc:  # the dataset's or model's own word on the spec
        raise _fails(task, exc) from None


@contextlib.contextmanager
def _failing_the_job(task: Any, spec: dict[str, Any]) -> Iterator[None]:
    """An InvalidArgument here (the job's data, model or folder) fails the whole job now.

    A volunteer's worker stores it in its own namespace, where no one reads
    it; there the round's deadline ends the job instead."""
    try:
        yield
    except InvalidArgument as exc:
        task.backend.mark_as_failure(spec["job"], exc)
        raise


def _ttl(task: Any, spec: dict[str, Any]) -> int:
    """How long a round's keys live: the results' lifetime, and past two deadlines."""
    return max(int(task.app.conf.result_expires or 86_400), int(2 * spec["deadline"]) + 3600)


# ---- sending a round ----------------------------------------------------------------

def send_round(spec: dict[str, Any], number: int) -> None:
    """Round ``number``'s replicas (ids known in advance), each linked to ``close_round``."""
    queue = train_spec.replica_queue(spec)
    for index in range(spec["replicas"]):
        link = close_round.s(spec, number, index).set(queue=spec["queue"])
        replica.apply_async((spec, number, index), task_id=replica_id(spec["job"], number,
                                                                      index),
                            queue=queue, link=link)
    close_round.apply_async((None, spec, number, -1), countdown=spec["deadline"],
                            queue=spec["queue"])


@compute_task("compute.train.start")
def start(self, spec: dict) -> dict:
    """Build the model, write round 0's weights and send round 0 (and the baseline)."""
    spec = train_spec.check(spec, self.name)
    store = Store(spec["output"])
    with _failing_the_job(self, spec):
        built = _setup(self, spec, fresh=True)  # the seeded initial weights
        try:
            store.root.mkdir(parents=True, exist_ok=True)
            (store.root / "spec.json").write_text(json.dumps(spec, indent=2))
            if not store.global_weights(0).exists():
                save(store.global_weights(0), built.weights())
        except OSError as exc:
            raise _fails(self, f"cannot write under {spec['output']!r}: {exc}") from None
    send_round(spec, 0)
    if spec["baseline"]:
        baseline.apply_async((spec,), queue=spec["queue"])
    return {"hostname": self.request.hostname, "job": spec["job"],
            "parameters": sum(int(p.numel()) for p in built.params.values()),
            "bytes": diloco.tensor_bytes(built.params)}


# ---- a replica ------------------------------------------------------------------------

def _latest_inner_state(store: Store, number: int, replica: int) -> Path | None:
    for earlier in range(number, 0, -1):
        path = store.inner_state(earlier, replica)
        if path.exists():
            return path
    return None


@compute_task("compute.train.replica")
def replica(self, spec: dict, number: int, replica: int) -> dict:
    """H AdamW steps of replica ``replica`` from round ``number``'s θ; writes its Δ."""
    spec, number, index = _checked(self, spec, number, replica)
    if index < 0:
        raise InvalidArgument(f"{self.name}: argument 'replica' must be a whole number from 0 "
                              f"to {spec['replicas'] - 1}; got {index}")
    store = Store(spec["output"])
    started = time.monotonic()
    summary = {"hostname": self.request.hostname, "round": number, "replica": index}
    if store.closed(number):
        return {**summary, "late": True}
    with _failing_the_job(self, spec):  # the data or model: the same on every worker
        run = _setup(self, spec, index, spec["replicas"])
    expected = diloco.tensor_bytes(run.params)  # no copy: only their sizes
    try:
        theta = load(store.global_weights(number), expected)
        _check_fits(theta, run)
    except Unreadable as exc:
        if store.closed(number):
            return {**summary, "late": True}
        raise _fails(self, f"round {number}'s weights: {exc}") from None
    run.load_weights(theta)
    first = _resume(self, run, store, number, index, expected)
    steps, every = spec["inner_steps"], spec["checkpoint_every"]
    losses = []
    for step in range(first, steps):
        if step > first and step % every == 0:
            if store.closed(number):  # the round closed without this replica: stop now
                return {**summary, "late": True, "steps": step - first}
            save(store.checkpoint(number, index), {**{f"w/{k}": v for k, v in
                                                      run.weights().items()},
                                                   **run.optim_tensors()})
            self.checkpoint({"round": number, "step": step})
        losses.append(run.step(number * steps + step))
        self.progress(step + 1, steps, round=number, replica=index)
    local = run.weights()
    save(store.inner_state(number + 1, index), run.optim_tensors())
    sent = save(store.delta(number, index), diloco.pseudo_gradient(theta, local))
    self.clear_checkpoint()
    store.checkpoint(number, index).unlink(missing_ok=True)
    tail = losses[-max(1, len(losses) // 4):] or [math.nan]
    return {**summary, "loss": sum(tail) / len(tail), "steps": steps, "resumed_from": first,
            "bytes": sent, "seconds": round(time.monotonic() - started, 3),
            "peak_rss_mb": _peak_rss_mb(), "device": str(next(iter(run.params.values())).device)}


def _check_fits(theta: dict[str, Any], run: train_loop.Replica) -> None:
    """Unreadable unless ``theta`` holds the model's trainable tensors, by name and shape."""
    if set(theta) != set(run.params) or any(tuple(theta[name].shape) != tuple(p.shape)
                                            for name, p in run.params.items()):
        raise Unreadable("its tensors are not the model's")


def _peak_rss_mb() -> float:
    """This pool process's peak resident memory so far (MiB; what a replica costs a PC)."""
    import sys

    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return round(getattr(psutil.Process().memory_info(), "peak_wset", 0) / (1 << 20), 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; bytes on macOS
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _resume(task: Any, run: train_loop.Replica, store: Store, number: int, index: int,
            expected: int) -> int:
    """The step to start from: a checkpoint of this round if one is sound, else 0."""
    saved = task.restore()
    if isinstance(saved, dict) and saved.get("round") == number:
        step = saved.get("step")
        try:
            tensors = load(store.checkpoint(number, index), 4 * expected)
        except Unreadable as exc:
            log.warning("%s: checkpoint of round %d unreadable (%s): starting over",
                        task.name, number, exc)
        else:
            weights = {k[2:]: v for k, v in tensors.items() if k.startswith("w/")}
            if (isinstance(step, int) and 0 < step < run.spec["inner_steps"]
                    and set(weights) == set(run.params) and run.load_optim(tensors)):
                run.load_weights(weights)
                return step
    state = _latest_inner_state(store, number, index)
    if state is not None:
        try:
            tensors = load(state, 3 * expected)
        except Unreadable:
            tensors = {}
        if not run.load_optim(tensors):
            log.warning("%s: inner state %s unusable: a fresh AdamW", task.name, state.name)
    return 0


# ---- closing a round ------------------------------------------------------------------

def _arrival_row(result: Any) -> dict[str, Any]:
    """What the close keeps of a replica's result (a volunteer's word: cleaned, bounded)."""
    result = result if isinstance(result, dict) else {}
    loss = result.get("loss")
    host = result.get("hostname")
    return {"hostname": _HOST.sub("", host)[:100] if isinstance(host, str) else "",
            "loss": _bounded(loss, 1e9), "peak_rss_mb": _bounded(result.get("peak_rss_mb"), 1e7),
            "seconds": _bounded(result.get("seconds"), 1e7)}


def _bounded(value: Any, limit: float) -> float | None:
    return (float(value) if validate.is_a(value, (int, float)) and abs(value) < limit
            and math.isfinite(value) else None)  # abs first: 10**400 has no float


@compute_task("compute.train.close_round")
def close_round(self, arrival: Any, spec: dict, number: int, replica: int) -> dict:
    """A replica arrived (``arrival``: its result), or the deadline passed (``replica`` -1).

    Closes round ``number`` at the quorum, or at the deadline with whatever
    arrived; the closing call runs the outer step and sends the next round.
    """
    spec, number, index = _checked(self, spec, number, replica)
    client = self.app.backend.client
    ttl = _ttl(self, spec)
    done = {"hostname": self.request.hostname, "round": number}
    if index < 0 and Store(spec["output"]).closed(number):
        return {**done, "closed_by_another": True}  # a deadline after the round (or job) ended
    if index >= 0:
        if isinstance(arrival, dict) and arrival.get("late"):
            return {**done, "late": True}
        count = train_rounds.arrive(client, spec["job"], number, index,
                                    _arrival_row(arrival), ttl)
        if count == train_rounds.LATE:
            return {**done, "late": True}
        if count < spec["quorum"]:
            return {**done, "arrived": count}
    elif (not train_rounds.is_closed(client, spec["job"], number)
          and train_rounds.count(client, spec["job"], number) == 0):
        return _nothing_arrived(self, spec, number, done)
    arrivals = train_rounds.close(client, spec["job"], number, self.request.id or "direct",
                                  ttl)
    if arrivals is None:
        return {**done, "closed_by_another": True}
    try:
        return _close(self, spec, number, arrivals)
    except Exception as exc:
        self.backend.mark_as_failure(spec["job"], exc)
        raise


def _nothing_arrived(task: Any, spec: dict[str, Any], number: int,
                     done: dict[str, Any]) -> dict[str, Any]:
    """At the deadline with no replica in: fail the job if all failed, else wait once more."""
    states = [task.app.AsyncResult(replica_id(spec["job"], number, i)).state
              for i in range(spec["replicas"])]
    if all(state == "FAILURE" for state in states):
        error = InvalidArgument(f"compute.train: every replica of round {number} failed; "
                                f"see task {replica_id(spec['job'], number, 0)}")
        task.backend.mark_as_failure(spec["job"], error)
        return {**done, "failed": True}
    close_round.apply_async((None, spec, number, -1), countdown=spec["deadline"],
                            queue=spec["queue"])
    return {**done, "waiting": True}


def _close(task: Any, spec: dict[str, Any], number: int,
           arrivals: dict[int, dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    store = Store(spec["output"])
    run = _setup(task, spec)
    try:
        theta = load(store.global_weights(number))
        _check_fits(theta, run)
    except Unreadable as exc:
        raise _fails(task, f"round {number}'s weights: {exc}") from None
    expected = diloco.tensor_bytes(theta)
    limit = diloco.bound(theta, train_spec.inner(spec), spec["inner_steps"])
    deltas, used, refused = [], [], []
    for index in sorted(arrivals):
        try:
            delta = load(store.delta(number, index), expected)
            diloco.check(delta, theta, limit)
        except (Unreadable, diloco.RefusedDelta) as exc:
            refused.append({"replica": index, "hostname": arrivals[index]["hostname"],
                            "why": str(exc)})
            log.warning("round %d: replica %d's Δ refused: %s", number, index, exc)
            continue
        deltas.append(delta)
        used.append(index)
    momentum_path = store.outer_state(number)
    momentum = load(momentum_path, expected) if momentum_path.exists() else None
    if deltas:
        theta, momentum = diloco.outer_step(theta, diloco.average(deltas), momentum,
                                            train_spec.outer(spec))
    run.load_weights(theta)
    scores = run.model.evaluate(_validation(spec))
    losses = [arrivals[i]["loss"] for i in used if arrivals[i]["loss"] is not None]
    row = {"round": number, "train_loss": sum(losses) / len(losses) if losses else None,
           "val_loss": scores["loss"], "val_accuracy": scores["accuracy"],
           "samples": (number + 1) * spec["replicas"] * spec["inner_steps"]
           * spec["batch_size"], "replicas": used, "refused": refused,
           "volunteers": sorted({arrivals[i]["hostname"] for i in used}),
           "late": sorted(set(range(spec["replicas"])) - set(arrivals)),
           "replica_peak_rss_mb": max((arrivals[i].get("peak_rss_mb") or 0.0 for i in used),
                                      default=None),
           "replica_seconds": max((arrivals[i].get("seconds") or 0.0 for i in used),
                                  default=None),
           "bytes_per_replica": 2 * expected, "time": time.time(),
           "close_seconds": 0.0}
    last = number + 1 == spec["rounds"]
    if not last:
        if momentum:
            save(store.outer_state(number + 1), momentum)
        save(store.global_weights(number + 1), theta)
    row["close_seconds"] = round(time.monotonic() - started, 3)
    if not any(r.get("round") == number for r in read_rows(store.metrics)):
        append_row(store.metrics, row)
    _draw(store)
    jobs.update(task.app, spec["job"], round=number + 1, rounds=spec["rounds"], last=row,
                volunteers=sorted({v for r in read_rows(store.metrics)
                                   for v in r.get("volunteers", [])}))
    if number > 0:
        store.drop_round(number - 1)
    if not last:
        send_round(spec, number + 1)
        return {"hostname": task.request.hostname, **row}
    return _finish(task, spec, store, run, row)


def _finish(task: Any, spec: dict[str, Any], store: Store, run: train_loop.Replica,
            row: dict[str, Any]) -> dict[str, Any]:
    run.model.save(store.root)
    (store.root / "done.json").write_text(json.dumps(row))
    store.drop_rounds()
    rows = read_rows(store.metrics)
    result = {"hostname": task.request.hostname, "output": str(store.root),
              "rounds": len(rows), "val_accuracy": row["val_accuracy"],
              "val_loss": row["val_loss"], "plot": str(store.plot),
              "volunteers": sorted({v for r in rows for v in r.get("volunteers", [])}),
              "refused": sum(len(r.get("refused", [])) for r in rows)}
    task.backend.mark_as_done(spec["job"], result)
    return result


def _validation(spec: dict[str, Any]) -> list[Any]:
    return train_loop.load_data(spec).validation


def _draw(store: Store) -> None:
    from compute import train_plot

    try:
        train_plot.draw(read_rows(store.metrics), read_rows(store.baseline), store.plot)
    except (ImportError, OSError) as exc:  # no matplotlib here: the metrics still are
        log.warning("training plot not drawn: %s", exc)


# ---- a single-process baseline, and prediction ---------------------------------------------

@compute_task("compute.train.baseline")
def baseline(self, spec: dict) -> dict:
    """The same model trained in one process on as many samples: a row per round's worth."""
    spec = train_spec.check(spec, self.name)
    store = Store(spec["output"])
    every = spec["replicas"] * spec["inner_steps"]
    started = time.monotonic()

    def report(step: int, run: train_loop.Replica, loss: float) -> None:
        scores = run.model.evaluate(data)
        append_row(store.baseline, {"round": step // every - 1, "train_loss": loss,
                                    "val_loss": scores["loss"],
                                    "val_accuracy": scores["accuracy"],
                                    "samples": step * spec["batch_size"],
                                    "seconds": round(time.monotonic() - started, 3)})

    try:
        data = _validation(spec)
        store.baseline.unlink(missing_ok=True)
        train_loop.local_training(spec, every * spec["rounds"], device(spec["gpu"]),
                                  every, report)
    except ValueError as exc:
        raise _fails(self, exc) from None
    except OSError as exc:
        raise _fails(self, f"cannot write under {spec['output']!r}: {exc}") from None
    _draw(store)
    rows = read_rows(store.baseline)
    return {"hostname": self.request.hostname, "rounds": len(rows),
            "val_accuracy": rows[-1]["val_accuracy"] if rows else None,
            "seconds": round(time.monotonic() - started, 3)}


@compute_task("compute.train.predict")
def predict(self, model: str, texts: list) -> dict:
    """Labels (and their probability) for ``texts`` from a model folder a job saved."""
    from compute import train_predict

    model = validate.path(self.name, "model", model, local=True)
    if (not isinstance(texts, list) or not 1 <= len(texts) <= MAX_TEXTS
            or not all(isinstance(t, str) and len(t) <= 10_000 for t in texts)):
        raise InvalidArgument(f"{self.name}: argument 'texts' must be a list of 1 to "
                              f"{MAX_TEXTS} texts of at most 10000 characters; "
                              f"got {validate.shown(texts)}")
    try:
        labels, scores = train_predict.classify(model, texts, device(False))
    except ValueError as exc:
        raise _fails(self, exc, "model") from None
    return {"hostname": self.request.hostname, "labels": labels, "scores": scores}
