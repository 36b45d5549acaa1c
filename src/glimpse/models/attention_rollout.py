"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

How much each input token contributes to each output token through a stack of attention
layers, taking the residual connections into account: every layer's head-averaged attention
``A_l (N, N)`` is mixed with the identity of its skip connection and renormalised,

    Ã_l = normalise_rows(w I + (1 - w) A_l),

and the layers are chained by matrix products, ``R = Ã_L Ã_{L-1} ... Ã_1``. Row ``i`` of
``R`` spreads output token ``i`` over the input tokens; the class token's row over the patch
tokens is the map drawn over an image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def attention_rollout(attentions: Sequence[Tensor], residual_weight: float = 0.5) -> Tensor:
    """Roll out per-layer attention probabilities ``(B, heads, N, N)``, first layer first,
    into ``R (B, N, N)`` (rows sum to 1). ``residual_weight`` is ``w`` above (the paper's
    0.5: the skip connection and the attention weigh the same)."""
    if not attentions:
        raise ValueError("Attention rollout needs the attention maps of at least one layer.")
    if not 0 <= residual_weight <= 1:
        raise ValueError(f"residual_weight={residual_weight} must be in [0, 1].")
    first = attentions[0]
    identity = torch.eye(first.shape[-1], device=first.device, dtype=torch.float32)
    rollout = identity.expand(first.shape[0], -1, -1)
    for attention in attentions:
        mixed = residual_weight * identity + (1 - residual_weight) * attention.float().mean(1)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout
