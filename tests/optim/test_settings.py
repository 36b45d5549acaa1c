"""The one optimizer dialect: each mistake is refused naming the key, and the settings build
torch's AdamW or our LARS as configured (tests/test_configs.py reads every shipped config in
it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from glimpse.errors import ConfigError
from glimpse.optim.lars import LARS
from glimpse.optim.param_groups import decay_groups
from glimpse.optim.settings import OptimizerSettings, build_optimizer


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lr": 1e-3, "beta": 0.9}, r"model.optimizer has unknown key\(s\) beta; known:"),
        ({"lr": 1e-3, "name": "sgd"}, r"model.optimizer.name='sgd' must be one of adamw, lars"),
        ({"weight_decay": 0.1}, "model.optimizer.lr is missing"),
        ({"lr": -1.0}, "must not be negative"),
        ({"lr": 1e-3, "lr_batch_size": 0}, "lr_batch_size=0 must be a positive"),
        ({"lr": 1e-3, "betas": [0.9, 1.5]}, r"betas=\[0.9, 1.5\] must be two values"),
    ],
)
def test_mistakes_are_refused_naming_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        OptimizerSettings.from_config(config)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def test_adamw_is_torchs_with_the_configured_hyperparameters_and_ignores_lars_ones():
    settings = OptimizerSettings.from_config(
        {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-6, "momentum": 0.5}
    )
    ours = build_optimizer(decay_groups(_model(), settings.weight_decay), settings, settings.lr)
    assert type(ours) is torch.optim.AdamW
    decay, no_decay = ours.param_groups
    assert (decay["lr"], decay["weight_decay"], decay["betas"], decay["eps"]) == (
        1e-3,
        0.1,
        (0.9, 0.98),
        1e-6,
    )
    assert no_decay["weight_decay"] == 0.0
    assert "momentum" not in decay  # LARS's setting, kept for name=lars, unused by AdamW


def test_lars_adapts_the_decay_group_only_and_a_group_may_keep_its_own_rate():
    settings = OptimizerSettings.from_config(
        {"name": "lars", "lr": 0.2, "weight_decay": 1.5e-6, "trust_coefficient": 1e-3}
    )
    model = _model()
    groups = decay_groups(model, settings.weight_decay, exclude=("2.",))
    groups.append({"name": "probe", "params": list(model[2].parameters()), "lr": 0.05})
    ours = build_optimizer(groups, settings, lr=0.1)
    assert type(ours) is LARS
    adapted = {g["name"]: (g["lars_adaptation"], g["lr"]) for g in ours.param_groups}
    assert adapted == {"decay": (True, 0.1), "no_decay": (False, 0.1), "probe": (False, 0.05)}
    assert ours.param_groups[2]["weight_decay"] == 1.5e-6  # the settings' default


def test_adamw_is_fused_on_cuda_parameters_and_not_on_the_cpu():
    settings = OptimizerSettings.from_config({"lr": 1e-3})
    on_cpu = build_optimizer(decay_groups(_model(), 0.0), settings, settings.lr)
    assert not on_cpu.defaults["fused"]
    # CUDA parameters without a GPU: fake tensors carry the device, and AdamW's own check that
    # its fused kernel supports them runs on them.
    with FakeTensorMode(), torch.device("cuda"):
        model = _model()
        on_cuda = build_optimizer(decay_groups(model, 0.0), settings, settings.lr)
    assert on_cuda.defaults["fused"] is True
