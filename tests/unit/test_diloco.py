"""DiLoCo's arithmetic: the outer step is PyTorch's Nesterov SGD, and the bound holds for AdamW."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import diloco
from compute.diloco import Inner, Outer


def tensors(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(4, 3, generator=generator),
            "b": torch.randn(5, generator=generator)}


@pytest.mark.parametrize("outer", [Outer(0.7, 0.9, True), Outer(0.5, 0.8, False),
                                   Outer(1, 0, False)])
def test_the_outer_step_is_torchs_sgd_with_the_pseudo_gradient_as_its_gradient(outer):
    theta = tensors(0)
    params = {name: torch.nn.Parameter(t.clone()) for name, t in theta.items()}
    sgd = torch.optim.SGD(list(params.values()), lr=outer.lr, momentum=outer.momentum,
                          nesterov=outer.nesterov)
    momentum = None
    for round_ in range(4):
        delta = tensors(100 + round_)
        for name, p in params.items():
            p.grad = delta[name].clone()
        sgd.step()
        theta, momentum = diloco.outer_step(theta, delta, momentum, outer)
    for name, p in params.items():
        torch.testing.assert_close(theta[name], p.detach(), atol=1e-6, rtol=1e-6)


def test_one_replica_outer_lr_1_no_momentum_gives_the_replicas_weights():
    theta, local = tensors(1), tensors(2)
    nxt, momentum = diloco.outer_step(theta, diloco.pseudo_gradient(theta, local), None,
                                      Outer(lr=1.0, momentum=0.0))
    assert momentum == {}
    for name in theta:
        torch.testing.assert_close(nxt[name], local[name], atol=1e-6, rtol=0)


def test_the_average_is_weighted_by_samples():
    one, two = {"w": torch.tensor([1.0])}, {"w": torch.tensor([4.0])}
    assert float(diloco.average([one, two])["w"]) == 2.5
    assert float(diloco.average([one, two], [3, 1])["w"]) == 1.75


def test_adams_step_bound_for_pytorchs_defaults():
    assert diloco.adam_step_bound(0.9, 0.999) == pytest.approx(7.27, abs=0.01)
    with pytest.raises(ValueError, match="beta1"):
        diloco.adam_step_bound(0.99, 0.9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 30),
       scale=st.sampled_from([1e-8, 1e-3, 1.0, 1e4]), lr=st.sampled_from([1e-4, 1e-2, 0.5]),
       decay=st.sampled_from([0.0, 0.01, 0.3]), kind=st.sampled_from(["noise", "spiky", "same"]))
def test_honest_adamw_steps_never_leave_the_bound(seed, steps, scale, lr, decay, kind):
    """Any gradients at all (noise, rare spikes, a constant push): AdamW stays inside."""
    generator = torch.Generator().manual_seed(seed)
    theta = {"w": torch.randn(64, generator=generator) * 3}
    param = torch.nn.Parameter(theta["w"].clone())
    adam = torch.optim.AdamW([param], lr=lr, weight_decay=decay)
    for step in range(steps):
        if kind == "noise":
            grad = torch.randn(64, generator=generator) * scale
        elif kind == "spiky":
            grad = torch.zeros(64) if step % 7 else torch.randn(64, generator=generator) * scale
        else:
            grad = torch.full((64,), scale)
        param.grad = grad
        adam.step()
    delta = diloco.pseudo_gradient(theta, {"w": param.detach()})
    limit = diloco.bound(theta, Inner(lr=lr, weight_decay=decay), steps)
    diloco.check(delta, theta, limit)  # raises if an honest replica were refused


def test_a_delta_beyond_what_adamw_can_move_is_refused_naming_the_tensor():
    theta = tensors(3)
    limit = diloco.bound(theta, Inner(lr=1e-3), 10)
    honest = {name: torch.zeros_like(t) for name, t in theta.items()}
    diloco.check(honest, theta, limit)
    scaled = {**honest, "b": torch.full((5,), 0.2)}  # 10 steps of lr 1e-3 move at most ~0.07
    with pytest.raises(diloco.RefusedDelta, match="b: 5 values move farther than AdamW"):
        diloco.check(scaled, theta, limit)


@pytest.mark.parametrize(("delta", "why"), [
    ({"a": torch.zeros(4, 3)}, "not the model's"),
    ({"a": torch.zeros(4, 3), "b": torch.zeros(5), "c": torch.zeros(1)}, "not the model's"),
    ({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, r"a is torch.float32 \(3, 4\)"),
    ({"a": torch.zeros(4, 3, dtype=torch.float64), "b": torch.zeros(5)}, "float64"),
    ({"a": torch.zeros(4, 3), "b": torch.tensor([0, 0, float("nan"), 0, 0])}, "NaN"),
    ({"a": torch.zeros(4, 3), "b": torch.tensor([0, 0, float("inf"), 0, 0])}, "infinite"),
])
def test_a_malformed_delta_is_refused(delta, why):
    theta = tensors(4)
    with pytest.raises(diloco.RefusedDelta, match=why):
        diloco.check(delta, theta, diloco.bound(theta, Inner(lr=1e-3), 10))


def test_tensor_bytes():
    assert diloco.tensor_bytes(tensors(0)) == (12 + 5) * 4
