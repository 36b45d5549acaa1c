"""LARS, layer-wise adaptive rate scaling (You et al. 2017), as BYOL trains with it.

BYOL (Grill et al. 2020, appendix C) uses LARS with momentum 0.9, trust coefficient
``eta = 1e-3`` and weight decay 1.5e-6, "excluding the biases and batch normalization
parameters from both LARS adaptation and weight decay". Its update of a parameter ``w`` with
gradient ``g`` is optax's ``lars`` chain (the BYOL release's optimizer):

    u = g + lambda w                                   (weight decay)
    u = eta ||w|| / ||u|| * u   when ||w|| > 0 and ||u|| > 0   (trust ratio)
    v = m v + lr u                                     (momentum on the scaled step)
    w = w - v

A parameter group with ``lars_adaptation=False`` skips the first two lines, so it is plain SGD
with momentum (its ``weight_decay`` should then be 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS with BYOL's conventions (module docstring).

    Args:
        params: parameters or parameter groups; a group may set ``lars_adaptation`` (default
            True), ``weight_decay``, ``lr`` and ``momentum``.
        lr: the learning rate (already scaled with the batch size).
        weight_decay: ``lambda``, added to the gradient before the trust ratio.
        momentum: ``m``.
        trust_coefficient: ``eta``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 1e-3,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS needs lr={lr} >= 0, weight_decay={weight_decay} >= 0, momentum="
                f"{momentum} in [0, 1) and trust_coefficient={trust_coefficient} > 0."
            )
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
            "lars_adaptation": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                update = w.grad
                if group["lars_adaptation"]:
                    update = update.add(w, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(update)
                    ratio = group["trust_coefficient"] * w_norm / u_norm
                    update = update * torch.where((w_norm > 0) & (u_norm > 0), ratio, 1.0)
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                velocity = state["momentum_buffer"]
                velocity.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                w.sub_(velocity)
        return loss
