"""The momentum (EMA) teacher of BYOL and DINO and the schedules they train with.

* :func:`ema_update_`: ``theta_t <- tau theta_t + (1 - tau) theta_o`` (BYOL eq. 1; DINO's
  teacher update ``theta_t <- lambda theta_t + (1 - lambda) theta_s``).
* :func:`cosine_momentum`: BYOL's ``tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` (sec.
  3.3), which DINO uses for ``lambda`` too (0.996 to 1).
* :func:`teacher_temperature`: DINO's teacher temperature, a linear warm-up (0.04 to 0.07 over
  30 epochs) then constant (sec. 4 and appendix; ``teacher_temp_schedule`` in its code).
* :func:`cosine_schedule`: the cosine ramp of the above and of DINO's weight decay (0.04 to 0.4).
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place, ``theta_t <- tau theta_t + (1 - tau) theta_o`` for every parameter of
    ``target`` and the parameter of the same name in ``online`` (requires_grad or not); buffers
    (BatchNorm's running statistics) are copied from ``online``.

    Raises ValueError when ``tau`` is outside ``[0, 1]`` or the two modules' parameter or
    buffer names differ (the target must be a copy of the online network).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"The EMA momentum tau={tau} must be in [0, 1].")
    target_params, online_params = dict(target.named_parameters()), dict(online.named_parameters())
    target_buffers, online_buffers = dict(target.named_buffers()), dict(online.named_buffers())
    if (
        target_params.keys() != online_params.keys()
        or target_buffers.keys() != online_buffers.keys()
    ):
        raise ValueError(
            "The EMA target's parameters or buffers are not named as the online network's; "
            "build the target as copy.deepcopy(online)."
        )
    names = list(target_params)
    torch._foreach_lerp_(
        [target_params[n] for n in names], [online_params[n] for n in names], 1.0 - tau
    )
    for name, buffer in target_buffers.items():
        buffer.copy_(online_buffers[name])


def cosine_schedule(step: float, total_steps: float, start: float, end: float) -> float:
    """``end + (start - end) (1 + cos(pi k / K)) / 2`` with ``k = min(step, K)``: ``start`` at
    step 0, their mean at ``K / 2``, ``end`` from ``K = total_steps`` on (DINO's
    ``cosine_scheduler`` without warm-up)."""
    if total_steps <= 0:
        raise ValueError(f"A cosine schedule needs total_steps > 0, got {total_steps}.")
    progress = min(max(step, 0), total_steps) / total_steps
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def cosine_momentum(step: float, total_steps: float, base: float = 0.996) -> float:
    """BYOL's target momentum at training step ``k = step`` of ``K = total_steps``:
    ``1 - (1 - base) (cos(pi k / K) + 1) / 2``, from ``base`` at the start to 1 at the end."""
    return cosine_schedule(step, total_steps, base, 1.0)


def teacher_temperature(
    epoch: float, warmup_epochs: float, start: float = 0.04, end: float = 0.07
) -> float:
    """DINO's teacher temperature at ``epoch`` (a float for a fraction of an epoch): linear from
    ``start`` at epoch 0 to ``end`` at epoch ``warmup_epochs - 1``, then ``end``.

    At whole epochs this equals DINO's ``np.linspace(start, end, warmup_epochs)`` followed by
    ``end``; ``warmup_epochs`` 0 means ``end`` throughout.
    """
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={warmup_epochs} must not be negative.")
    if epoch >= warmup_epochs:
        return end
    progress = min(max(epoch, 0) / max(warmup_epochs - 1, 1), 1.0)
    return start + (end - start) * progress
