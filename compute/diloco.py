"""DiLoCo's arithmetic, pure: pseudo-gradients, their bound, and the outer Nesterov step.

Douillard et al., 2023 ("DiLoCo: Distributed Low-Communication Training of
Language Models"): each replica takes H inner AdamW steps from the round's
global weights θ and sends its pseudo-gradient Δᵢ = θ − θᵢ; the outer
optimizer averages them and takes one SGD step with Nesterov momentum
(the paper's lr 0.7, momentum 0.9). With one replica, outer lr 1 and no
momentum, the next θ is the replica's own weights: plain local training.

A volunteer's Δ is a stranger's word. :func:`bound` is what H honest AdamW
steps can move each weight at most (a property of Adam, whatever the data):
a Δ beyond it, or not finite, or of other names or shapes than θ, is refused
whole (:func:`check`), so one bad volunteer moves the model no further than
an honest one could.

Tensors are ``dict[str, torch.Tensor]`` (the trainable parameters by name).
No I/O, no Celery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Tensors = Mapping[str, Any]


@dataclass(frozen=True)
class Inner:
    """The replicas' AdamW settings (PyTorch's names)."""

    lr: float
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999


@dataclass(frozen=True)
class Outer:
    """The outer optimizer: SGD with (Nesterov) momentum over the averaged pseudo-gradient."""

    lr: float = 0.7
    momentum: float = 0.9
    nesterov: bool = True


def adam_step_bound(beta1: float, beta2: float) -> float:
    """The largest |m̂/√v̂| AdamW can take in one step, for any gradients.

    By Cauchy-Schwarz, |m_t| ≤ (1−β1)·√(Σ (β1²/β2)^j)·√(v_t/(1−β2)), and the
    bias corrections only shrink the ratio (√(1−β2^t) ≤ 1−β1^t). 7.27 for
    PyTorch's defaults; an honest step is usually near 1.
    """
    ratio = beta1 * beta1 / beta2
    if not 0 <= ratio < 1:
        raise ValueError(f"AdamW betas {beta1}, {beta2}: beta1² must be below beta2")
    return (1 - beta1) / math.sqrt(1 - beta2) / math.sqrt(1 - ratio)


def bound(global_weights: Tensors, inner: Inner, steps: int) -> dict[str, Any]:
    """Per weight, the farthest ``steps`` honest AdamW steps can move it from θ (plus 1 %).

    Each step moves a weight by at most lr·K (Adam's update) plus its decay
    lr·wd·|w|; over H steps the decay shrinks |w| by at most 1−(1−lr·wd)^H of
    (|θ| + H·lr·K).
    """
    per_step = inner.lr * adam_step_bound(inner.beta1, inner.beta2)
    drift = steps * per_step
    decay = 1 - (1 - inner.lr * inner.weight_decay) ** steps
    return {name: (drift + decay * (theta.abs() + drift)) * 1.01 + 1e-12
            for name, theta in global_weights.items()}


class RefusedDelta(ValueError):
    """A pseudo-gradient the round does not use (the message says why, in one line)."""


def check(delta: Tensors, global_weights: Tensors, limit: Tensors) -> None:
    """RefusedDelta unless ``delta`` has θ's names, shapes and dtypes, is finite and in bound."""
    import torch

    if set(delta) != set(global_weights):
        missing = sorted(set(global_weights) - set(delta))[:3]
        extra = sorted(set(delta) - set(global_weights))[:3]
        raise RefusedDelta(f"its tensors are not the model's (missing {missing}, "
                           f"unknown {extra})")
    for name, theta in global_weights.items():
        value = delta[name]
        if tuple(value.shape) != tuple(theta.shape) or value.dtype != theta.dtype:
            raise RefusedDelta(f"{name} is {value.dtype} {tuple(value.shape)}, "
                               f"not {theta.dtype} {tuple(theta.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise RefusedDelta(f"{name} holds NaN or infinite values")
        over = value.abs() > limit[name]
        if bool(over.any()):
            worst = float((value.abs() - limit[name]).max())
            raise RefusedDelta(f"{name}: {int(over.sum())} values move farther than "
                               f"AdamW can in the round's steps (by up to {worst:.3g})")


def pseudo_gradient(global_weights: Tensors, local: Tensors) -> dict[str, Any]:
    """Δ = θ − θ_local, per tensor."""
    return {name: global_weights[name] - local[name] for name in global_weights}


def average(deltas: list[Tensors], weights: list[float] | None = None) -> dict[str, Any]:
    """The (weighted) mean of the pseudo-gradients (weights: each replica's sample count)."""
    if not deltas:
        raise ValueError("no pseudo-gradient to average")
    weights = weights or [1.0] * len(deltas)
    total = float(sum(weights))
    return {name: sum(d[name] * (w / total) for d, w in zip(deltas, weights, strict=True))
            for name in deltas[0]}


def outer_step(global_weights: Tensors, delta: Tensors, momentum: Tensors | None,
               outer: Outer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next θ and momentum buffer: PyTorch's SGD (dampening 0) with Δ as the gradient.

    b ← μ·b + Δ (b = Δ on the first step); step = Δ + μ·b with Nesterov, else b;
    θ ← θ − lr·step. With μ = 0 the step is Δ itself.
    """
    new_weights, new_momentum = {}, {}
    for name, theta in global_weights.items():
        grad = delta[name]
        if outer.momentum:
            previous = None if momentum is None else momentum.get(name)
            buffer = grad.clone() if previous is None else previous * outer.momentum + grad
            step = grad + outer.momentum * buffer if outer.nesterov else buffer
            new_momentum[name] = buffer
        else:
            step = grad
        new_weights[name] = theta - outer.lr * step
    return new_weights, new_momentum


def tensor_bytes(tensors: Tensors) -> int:
    """Bytes of the tensors' values (what one transfer of them costs, before compression)."""
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors.values())
