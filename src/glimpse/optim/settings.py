"""The one optimizer dialect: the ``model.optimizer`` mapping of every task, and what it builds.

Every task's config has the same keys (unknown ones are refused)::

    optimizer:
      name: adamw          # adamw (default) | lars
      lr: 1.0e-3           # per lr_batch_size images when that is set
      lr_batch_size: null  # the linear scaling rule: lr * global batch / lr_batch_size
      weight_decay: 0.05   # on the "decay" group (matrices; glimpse.optim.param_groups)
      weight_decay_end: null  # a cosine from weight_decay to this over training (DINO)
      betas: [0.9, 0.999]  # AdamW only
      eps: 1.0e-8          # AdamW only
      momentum: 0.9        # LARS only
      trust_coefficient: 1.0e-3  # LARS only

AdamW is PyTorch's (Loshchilov & Hutter 2019); LARS is :class:`glimpse.optim.lars.LARS`
(You et al. 2017, as BYOL trains with it). The keys of the optimizer not named are kept but
unused, so that ``name=`` alone switches a config from one to the other (the BYOL recipe that
trains with AdamW on a CPU keeps the model's LARS momentum). A task chooses the parameter
groups (a group may set its own ``lr``); the settings choose the optimizer and its
hyperparameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from glimpse.errors import ConfigError
from glimpse.optim.lars import LARS
from glimpse.optim.param_groups import is_decayed

OPTIMIZERS = ("adamw", "lars")


@dataclass(frozen=True)
class OptimizerSettings:
    """A checked ``model.optimizer`` mapping (module docstring); build it with
    :meth:`from_config`."""

    lr: float
    name: str = "adamw"
    lr_batch_size: int | None = None
    weight_decay: float = 0.0
    weight_decay_end: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    trust_coefficient: float = 1e-3

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], option: str = "model.optimizer"
    ) -> OptimizerSettings:
        """The settings of the mapping ``config`` (the user's ``option``); ConfigError naming
        the key for an unknown key, a missing ``lr``, an unknown optimizer or a value out of
        range."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(
                f"{option} has unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}."
            )
        name = config.get("name") or "adamw"
        if name not in OPTIMIZERS:
            raise ConfigError(f"{option}.name={name!r} must be one of {', '.join(OPTIMIZERS)}.")
        if config.get("lr") is None:
            raise ConfigError(f"{option}.lr is missing; give the learning rate.")
        values = {key: value for key, value in config.items() if value is not None}
        values["name"] = name
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        settings = cls(**values)
        settings._check_ranges(option)
        return settings

    def _check_ranges(self, option: str) -> None:
        if self.lr < 0 or self.weight_decay < 0 or (self.weight_decay_end or 0) < 0:
            raise ConfigError(
                f"{option}.lr={self.lr}, weight_decay={self.weight_decay} and weight_decay_end="
                f"{self.weight_decay_end} must not be negative."
            )
        if self.lr_batch_size is not None and self.lr_batch_size < 1:
            raise ConfigError(
                f"{option}.lr_batch_size={self.lr_batch_size} must be a positive number of "
                "images, or null for no scaling."
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{option}.betas={list(self.betas)} must be two values in [0, 1).")


def build_optimizer(
    groups: list[dict[str, Any]], settings: OptimizerSettings, lr: float
) -> torch.optim.Optimizer:
    """AdamW or LARS (``settings.name``) on the parameter groups ``groups`` at learning rate
    ``lr`` and ``settings.weight_decay`` (a group's own ``lr`` and ``weight_decay`` take
    precedence). Under LARS only the decayed groups
    (:func:`~glimpse.optim.param_groups.is_decayed`) are LARS-adapted unless a group says
    otherwise (``lars_adaptation``); the others are plain SGD with momentum, as in BYOL."""
    if settings.name == "lars":
        for group in groups:
            group.setdefault("lars_adaptation", is_decayed(group))
        return LARS(
            groups,
            lr=lr,
            weight_decay=settings.weight_decay,
            momentum=settings.momentum,
            trust_coefficient=settings.trust_coefficient,
        )
    return torch.optim.AdamW(
        groups,
        lr=lr,
        weight_decay=settings.weight_decay,
        betas=settings.betas,
        eps=settings.eps,
        fused=fused_kernels_apply(groups),
    )


def fused_kernels_apply(groups: list[dict[str, Any]]) -> bool:
    """Whether AdamW runs its fused CUDA kernel (one kernel launch for the update of every
    parameter, instead of foreach's several per group): when every parameter is a floating
    point tensor on a CUDA device, as it is once Lightning has moved the task there. On the
    CPU AdamW keeps its default (foreach) implementation."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
