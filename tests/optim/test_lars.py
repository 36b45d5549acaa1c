"""LARS as BYOL trains with it, against torch's SGD and a hand-written update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glimpse.optim.lars import LARS


def _grads(params: list[nn.Parameter], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def test_a_group_without_adaptation_is_torch_sgd_with_momentum():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
    reference = [nn.Parameter(p.detach().clone()) for p in ours]
    lars = LARS([{"params": ours, "lars_adaptation": False}], lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD(reference, lr=0.1, momentum=0.9)
    for step in range(4):
        _grads(ours, step)
        _grads(reference, step)
        lars.step()
        sgd.step()
    for mine, theirs in zip(ours, reference, strict=True):
        torch.testing.assert_close(mine, theirs)


def test_adapted_parameters_follow_the_trust_ratio_formula():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 6))
    lr, decay, momentum, eta = 0.5, 1e-2, 0.9, 1e-3
    optimizer = LARS([w], lr=lr, weight_decay=decay, momentum=momentum, trust_coefficient=eta)
    expected, velocity = w.detach().clone(), torch.zeros_like(w)
    for step in range(3):
        _grads([w], step)
        update = w.grad + decay * expected
        update = eta * expected.norm() / update.norm() * update
        velocity = momentum * velocity + lr * update
        expected = expected - velocity
        optimizer.step()
        torch.testing.assert_close(w.detach(), expected)


def test_zero_weights_and_missing_gradients_are_left_as_they_are():
    zero = nn.Parameter(torch.zeros(3, 3))
    idle = nn.Parameter(torch.ones(2, 2))
    optimizer = LARS([zero, idle], lr=1.0, momentum=0.0)
    zero.grad = torch.ones(3, 3)
    optimizer.step()
    # ||w|| = 0: the trust ratio is 1, so the step is the plain gradient step.
    torch.testing.assert_close(zero.detach(), -torch.ones(3, 3))
    assert torch.equal(idle.detach(), torch.ones(2, 2))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="momentum=1.5"):
        LARS([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=1.5)
