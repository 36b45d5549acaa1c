"""The warm-up + cosine learning-rate schedule, against torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR

from glimpse.optim.schedules import scaled_lr, warmup_cosine


def test_warmup_cosine_matches_torch_linear_then_cosine_schedulers():
    warmup, total, base_lr, min_ratio = 10, 50, 1e-3, 0.1
    params = [nn.Parameter(torch.zeros(1))]
    ours = LambdaLR(
        torch.optim.SGD(params, lr=base_lr),
        lambda step: warmup_cosine(step, warmup, total, min_ratio),
    )
    reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    reference = SequentialLR(
        reference_opt,
        [
            LinearLR(
                reference_opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1
            ),
            CosineAnnealingLR(reference_opt, T_max=total - warmup, eta_min=base_lr * min_ratio),
        ],
        milestones=[warmup],
    )
    for _ in range(total):
        assert ours.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0], rel=1e-6)
        ours.optimizer.step()
        reference_opt.step()
        ours.step()
        reference.step()


def test_warmup_cosine_endpoints():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi / 2))
    )
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)


def test_the_linear_scaling_rule_scales_with_the_batch_or_not_at_all():
    assert scaled_lr(0.2, 512, 256) == pytest.approx(0.4)
    assert scaled_lr(0.2, 64, 256) == pytest.approx(0.05)
    assert scaled_lr(0.2, 64, None) == 0.2
