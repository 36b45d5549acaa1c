"""The optimizer set-up and the learning-rate schedule, against torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR

from glimpse.tasks.optim import adamw_with_decay_groups, no_weight_decay_names, warmup_cosine


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


def test_adamw_decays_matrices_but_not_biases_or_norms():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    optimizer = adamw_with_decay_groups(model, lr=1e-3, weight_decay=0.1)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in plain["params"]} == {
        id(model[1].bias),
        id(model[2].weight),
        id(model[2].bias),
    }


def test_adamw_spares_what_a_submodule_lists_in_no_weight_decay():
    class WithTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.zeros(1, 3, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = nn.Sequential(nn.Linear(4, 4), WithTable())
    assert no_weight_decay_names(model) == {"1.table"}
    decayed, plain = adamw_with_decay_groups(model, lr=1e-3, weight_decay=0.1).param_groups
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].proj.weight)}
    assert id(model[1].table) in {id(p) for p in plain["params"]}
