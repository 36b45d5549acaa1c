"""AdamW with decoupled weight decay on matrices only, and a warm-up + cosine schedule."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Qualified names of the parameters that ``module`` or any submodule lists in its
    ``no_weight_decay()`` (timm's convention, e.g. ViT's ``{"pos_embed", "cls_token"}``)."""
    names: set[str] = set()
    for prefix, submodule in module.named_modules():
        listed = getattr(submodule, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{name}" if prefix else name for name in listed()}
    return names


def adamw_with_decay_groups(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) decaying only parameters with two or more dimensions
    (weights and embeddings), not biases or norm gains, as in nanoGPT and timm, and not the
    parameters a submodule lists in ``no_weight_decay()`` (position tables, class tokens)."""
    skip = no_weight_decay_names(module)
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    decayed = [p for name, p in named if p.ndim >= 2 and name not in skip]
    plain = [p for name, p in named if p.ndim < 2 or name in skip]
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


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
