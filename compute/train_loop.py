"""The inner loop: AdamW steps of one replica (or of a single-process baseline), resumable.

Everything a step depends on is a function of (seed, replica, step): the
rows of its batch (``train_models.batch``) and torch's random numbers
(dropout), reseeded before each step. So a replica resumed from a
checkpoint on another machine takes exactly the steps an uninterrupted one
would, and with one replica the rounds add up to plain local training.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compute import train_models
from compute.train_spec import inner

#: AdamW's per-parameter state as tensors named ``<param>/<field>``.
OPTIM_FIELDS = ("exp_avg", "exp_avg_sq")


@dataclass
class Replica:
    """One replica's model, its trainable parameters by name, and its optimizer."""

    model: train_models.Model
    params: dict[str, Any]
    optimizer: Any
    rows: list[Any]
    number: int
    spec: dict[str, Any]

    def weights(self) -> dict[str, Any]:
        """The trainable tensors, copied to the CPU (where θ and Δ are computed and saved)."""
        return {name: p.detach().to("cpu", copy=True) for name, p in self.params.items()}

    def load_weights(self, tensors: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(tensors[name].to(p.device))

    def optim_tensors(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for name, p in self.params.items():
            state = self.optimizer.state.get(p)
            if not state:
                continue
            for field in OPTIM_FIELDS:
                out[f"{name}/{field}"] = state[field]
            out[f"{name}/step"] = torch.as_tensor(float(state["step"]))
        return out

    def load_optim(self, tensors: dict[str, Any]) -> bool:
        """Resume AdamW from ``tensors``; False (a fresh optimizer) unless every part is sane."""
        import torch

        fresh: dict[Any, dict[str, Any]] = {}
        for name, p in self.params.items():
            fields = [f"{name}/{field}" for field in (*OPTIM_FIELDS, "step")]
            if not all(key in tensors for key in fields):
                return False
            avg, sq, step = (tensors[key] for key in fields)
            if (tuple(avg.shape) != tuple(p.shape) or tuple(sq.shape) != tuple(p.shape)
                    or step.numel() != 1 or not 0 <= float(step) <= 1e9
                    or not bool(torch.isfinite(avg).all()) or not bool(torch.isfinite(sq).all())
                    or bool((sq < 0).any())):
                return False
            fresh[p] = {"step": torch.tensor(float(step)), "exp_avg": avg.to(p.device).clone(),
                        "exp_avg_sq": sq.to(p.device).clone()}
        for p, state in fresh.items():
            self.optimizer.state[p] = state
        return True

    def step(self, number: int) -> float:
        """One AdamW step, number ``number`` of this replica's data stream; its loss."""
        import torch

        spec = self.spec
        torch.manual_seed((spec["seed"] * 1_000_003 + self.number * 100_003 + number) % 2**62)
        rows = train_models.batch(self.rows, number, spec["batch_size"],
                                  f"{spec['seed']}:{self.number}")
        loss = self.model.loss(rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def build(spec: dict[str, Any], data: train_models.Data, device: str, *, number: int = 0,
          shards: int = 1) -> Replica:
    """Replica ``number`` of ``shards`` (its share of the training rows), with a fresh AdamW."""
    import torch

    torch.manual_seed(spec["seed"])  # the head's initial weights: the same everywhere
    model = train_models.model(spec["model"])(data, spec["options"], device)
    params = {name: p for name, p in model.module.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"model {spec['model']!r} has no parameter that trains")
    rows = data.train[number::shards]
    if not rows:
        raise ValueError(f"replica {number} of {shards} gets no rows: "
                         f"the data has {len(data.train)} training rows")
    settings = inner(spec)
    optimizer = torch.optim.AdamW(list(params.values()), lr=settings.lr,
                                  betas=(settings.beta1, settings.beta2),
                                  weight_decay=settings.weight_decay)
    return Replica(model=model, params=params, optimizer=optimizer, rows=rows, number=number,
                   spec=spec)


#: The last model this process built, to reuse for the next task of the same job
#: (loading MiniLM costs about as much as 3 of its steps on 2 cores).
_BUILT: dict[str, Replica] = {}
_SAME_MODEL = ("model", "dataset", "data", "options", "seed", "lr", "weight_decay", "batch_size",
               "replicas", "inner_steps", "rounds")


def reuse(spec: dict[str, Any], data: train_models.Data, device: str, *, number: int = 0,
          shards: int = 1) -> Replica:
    """Like :func:`build`, but this process's last model when it is the same one.

    The caller loads θ into it; its AdamW starts fresh. Only trainable
    parameters are exchanged (buffers such as BatchNorm's statistics stay
    each replica's own), so frozen weights are as built.
    """
    key = json.dumps([{k: spec[k] for k in _SAME_MODEL}, device, number, shards],
                     sort_keys=True, default=str)
    found = _BUILT.get(key)
    if found is None:
        _BUILT.clear()
        found = _BUILT[key] = build(spec, data, device, number=number, shards=shards)
    else:
        found.optimizer.state.clear()
        found.spec = spec
    return found


def load_data(spec: dict[str, Any]) -> train_models.Data:
    return train_models.dataset(spec["dataset"])(spec["data"], spec["options"], spec["seed"])


def local_training(spec: dict[str, Any], steps: int, device: str = "cpu",
                   every: int = 0, report: Callable[[int, Replica, float], None] | None = None
                   ) -> Replica:
    """Plain training in one process: ``steps`` AdamW steps over all the training rows.

    ``report(step, replica, loss)`` after every ``every`` steps (the baseline's rows).
    """
    replica = build(spec, load_data(spec), device)
    for number in range(steps):
        loss = replica.step(number)
        if report is not None and every and (number + 1) % every == 0:
            report(number + 1, replica, loss)
    return replica
