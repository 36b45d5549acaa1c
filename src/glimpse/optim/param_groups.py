"""Parameter groups with decoupled weight decay on matrices only (nanoGPT's and timm's rule)."""

from __future__ import annotations

from typing import Any

from torch import nn


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Qualified names of the parameters that ``module`` or any submodule lists in its
    ``no_weight_decay()`` (timm's convention, e.g. ViT's ``{"pos_embed", "cls_token"}``)."""
    names: set[str] = set()
    for prefix, submodule in module.named_modules():
        listed = getattr(submodule, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{name}" if prefix else name for name in listed()}
    return names


def decay_groups(
    module: nn.Module,
    weight_decay: float,
    exclude: tuple[str, ...] = (),
    include_frozen: bool = False,
    part: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """The groups ``decay`` and ``no_decay`` of ``module``'s trained parameters (named
    ``<part>.decay`` and ``<part>.no_decay`` for a ``part`` of a task with several, so that
    every group's name is unique, as Lightning's LearningRateMonitor requires).

    ``decay`` holds the parameters with two or more dimensions (weights and embeddings) at
    ``weight_decay``; ``no_decay`` the biases, norm gains and what a submodule lists in
    ``no_weight_decay()`` (position tables, class tokens) at 0 (AdamW's decoupled decay,
    Loshchilov & Hutter 2019; LARS adapts the ``decay`` group only). Parameters whose name
    starts with one of ``exclude`` are left out, and so are those that do not require gradients
    unless ``include_frozen`` (a part unfrozen later in training); ``options`` (e.g. a group's
    own ``lr``) are set on both groups.
    """
    skip = no_weight_decay_names(module)
    named = [
        (name, p)
        for name, p in module.named_parameters()
        if (p.requires_grad or include_frozen) and not name.startswith(exclude)
    ]
    decayed = [p for name, p in named if p.ndim >= 2 and name not in skip]
    plain = [p for name, p in named if p.ndim < 2 or name in skip]
    prefix = "" if part is None else f"{part}."
    return [
        {"name": f"{prefix}decay", "params": decayed, "weight_decay": weight_decay, **options},
        {"name": f"{prefix}no_decay", "params": plain, "weight_decay": 0.0, **options},
    ]


def is_decayed(group: dict[str, Any]) -> bool:
    """Whether the parameter group ``group`` is a ``decay`` group of :func:`decay_groups` (or
    named like one): the groups LARS adapts and a weight-decay schedule sets."""
    name = str(group.get("name", ""))
    return name == "decay" or name.endswith(".decay")
