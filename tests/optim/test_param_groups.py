"""Which parameters are weight-decayed: matrices, not vectors nor what a module lists."""

from __future__ import annotations

import torch
from torch import nn

from glimpse.optim.param_groups import decay_groups, no_weight_decay_names


def test_matrices_are_decayed_but_not_biases_or_norms():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    decayed, plain = decay_groups(model, weight_decay=0.1)
    assert (decayed["name"], plain["name"]) == ("decay", "no_decay")
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in plain["params"]} == {
        id(model[1].bias),
        id(model[2].weight),
        id(model[2].bias),
    }


def test_what_a_submodule_lists_in_no_weight_decay_is_spared():
    class WithTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.zeros(1, 3, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = nn.Sequential(nn.Linear(4, 4), WithTable())
    assert no_weight_decay_names(model) == {"1.table"}
    decayed, plain = decay_groups(model, weight_decay=0.1)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].proj.weight)}
    assert id(model[1].table) in {id(p) for p in plain["params"]}


def test_frozen_and_excluded_parameters_are_left_out_unless_asked_for():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    decayed, plain = decay_groups(model, 0.1, exclude=("1.bias",), lr=0.5)
    assert {id(p) for p in decayed["params"]} == {id(model[1].weight)}
    assert plain["params"] == [] and decayed["lr"] == plain["lr"] == 0.5
    decayed, plain = decay_groups(model, 0.1, include_frozen=True)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[0].bias), id(model[1].bias)}
