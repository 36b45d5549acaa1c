"""The EMA update against its formula, and the momentum, temperature and cosine schedules
against BYOL's formula and DINO's numpy schedules at start, middle and end."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from glimpse.models.momentum import (
    cosine_momentum,
    cosine_schedule,
    ema_update_,
    teacher_temperature,
)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_ema_update_equals_the_formula_on_every_parameter():
    online, target = _net(0), _net(1)
    online.train()(torch.randn(6, 4))  # moves BatchNorm's running statistics
    before = {n: p.clone() for n, p in target.named_parameters()}
    online_before = {n: p.clone() for n, p in online.named_parameters()}
    ema_update_(target, online, 0.9)
    for name, param in target.named_parameters():
        assert_close(param, 0.9 * before[name] + 0.1 * online_before[name])
    for name, param in online.named_parameters():
        assert torch.equal(param, online_before[name])


def test_ema_update_copies_buffers_and_includes_frozen_parameters():
    online, target = _net(0), _net(1)
    online.train()(torch.randn(6, 4))
    online[0].weight.requires_grad_(False)
    ema_update_(target, online, 0.5)
    for (name, buffer), online_buffer in zip(target.named_buffers(), online.buffers(), strict=True):
        assert torch.equal(buffer, online_buffer), name
    assert_close(target[0].weight, (_net(1)[0].weight + online[0].weight) / 2)


def test_ema_update_tau_one_keeps_and_tau_zero_copies_the_online_network():
    online, target = _net(0), _net(1)
    kept = copy.deepcopy(target)
    ema_update_(target, online, 1.0)
    for a, b in zip(target.parameters(), kept.parameters(), strict=True):
        assert torch.equal(a, b)
    ema_update_(target, online, 0.0)
    for a, b in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ema_update_needs_no_gradients_and_gives_none():
    online = _net(0)
    target = copy.deepcopy(online).requires_grad_(False)
    online(torch.randn(3, 4)).sum().backward()
    ema_update_(target, online, 0.99)
    assert all(p.grad is None and not p.requires_grad for p in target.parameters())


def test_ema_update_refuses_a_different_network_and_tau_outside_0_1():
    with pytest.raises(ValueError, match="deepcopy"):
        ema_update_(nn.Linear(4, 2), _net(0), 0.9)
    with pytest.raises(ValueError, match="tau=1.5"):
        ema_update_(_net(1), _net(0), 1.5)


def test_cosine_momentum_start_middle_end_and_beyond():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(250, 100, 0.996) == pytest.approx(1.0)
    values = [cosine_momentum(k, 100) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("step", [0, 1, 17, 333, 999, 1000])
def test_cosine_momentum_equals_byols_formula(step):
    total, base = 1000, 0.99
    byol = 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2
    assert cosine_momentum(step, total, base) == pytest.approx(byol, abs=1e-15)


def _dino_cosine_scheduler(base_value, final_value, epochs, niter_per_ep):
    """DINO's utils.cosine_scheduler without warm-up (facebookresearch/dino, utils.py)."""
    iters = np.arange(epochs * niter_per_ep)
    return final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))


def test_cosine_schedule_equals_dinos_scheduler_at_every_step():
    expected = _dino_cosine_scheduler(0.04, 0.4, epochs=10, niter_per_ep=7)
    ours = [cosine_schedule(step, 70, 0.04, 0.4) for step in range(70)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    momentum = _dino_cosine_scheduler(0.996, 1.0, epochs=10, niter_per_ep=7)
    np.testing.assert_allclose([cosine_momentum(s, 70) for s in range(70)], momentum, rtol=1e-12)
    with pytest.raises(ValueError, match="total_steps > 0"):
        cosine_schedule(0, 0, 0.0, 1.0)


def test_teacher_temperature_equals_dinos_schedule_at_every_epoch():
    warmup, epochs = 30, 100
    dino = np.concatenate((np.linspace(0.04, 0.07, warmup), np.ones(epochs - warmup) * 0.07))
    ours = [teacher_temperature(epoch, warmup, 0.04, 0.07) for epoch in range(epochs)]
    np.testing.assert_allclose(ours, dino, rtol=1e-12)
    assert ours[0] == pytest.approx(0.04) and ours[29] == pytest.approx(0.07)


def test_teacher_temperature_middle_fractional_and_without_warmup():
    assert teacher_temperature(14.5, 30) == pytest.approx(0.04 + 0.03 * 14.5 / 29)
    assert teacher_temperature(29.5, 30) == pytest.approx(0.07)
    assert teacher_temperature(0, 0) == teacher_temperature(7, 0) == 0.07
    assert teacher_temperature(0, 1) == pytest.approx(0.04)
    assert teacher_temperature(1, 1) == pytest.approx(0.07)
    with pytest.raises(ValueError, match="warmup_epochs=-1"):
        teacher_temperature(0, -1)
