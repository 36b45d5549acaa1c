"""Learning-rate schedules: linear warm-up then cosine decay, and the linear scaling rule."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def scaled_lr(lr: float, batch_size: int, lr_batch_size: int | None) -> float:
    """The linear scaling rule (Goyal et al. 2017), ``lr * batch_size / lr_batch_size``: BYOL's
    ``0.2 * B / 256``, DINO's ``5e-4 * B / 256``; ``lr`` itself when ``lr_batch_size`` is None."""
    return lr if lr_batch_size is None else lr * batch_size / lr_batch_size


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step ``step``.

    Linear from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps, then a cosine
    from 1 down to ``min_lr_ratio`` at ``total_steps`` (SGDR, Loshchilov & Hutter 2017), and
    ``min_lr_ratio`` after that.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + 0.5 * (1 - min_lr_ratio) * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, schedule: dict[str, Any], total_steps: int
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for :func:`warmup_cosine` stepped every optimizer
    step, from ``schedule``'s ``warmup_steps`` and ``min_lr_ratio``."""
    lr_lambda = partial(
        warmup_cosine,
        warmup_steps=int(schedule["warmup_steps"]),
        total_steps=int(total_steps),
        min_lr_ratio=float(schedule["min_lr_ratio"]),
    )
    return {"scheduler": LambdaLR(optimizer, lr_lambda), "interval": "step"}
