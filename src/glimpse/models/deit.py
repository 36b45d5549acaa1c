"""DeiT with a distillation token (Touvron et al. 2021, "Training data-efficient image
transformers & distillation through attention", sec. 4).

A ViT (:mod:`glimpse.models.vit`) with a second learned token next to the class token: the
*distillation token*. Both are prepended to the ``N`` patch embeddings and both get a learned
position entry, so the sequence is ``[x_class; x_distil; x_p^1 E; ...; x_p^N E] + E_pos``,
``(B, 2 + N, D)``. They interact with the patches (and each other) through self-attention in
every block. After the final LayerNorm the class token feeds the usual linear head and the
distillation token its own linear head, ``head_dist``. In training the class head learns from
the true labels and the distillation head from the teacher (the losses live in
:class:`glimpse.tasks.distillation.DistillationClassifier`); at inference the two heads'
softmax inputs are averaged, the paper's "late fusion" of sec. 4 ("Classification with our
approach: joint classifiers"), which is what ``forward`` returns in evaluation mode.

Architectures and names follow the paper's Table 1 and timm's ``VisionTransformerDistilled``,
whose state dicts map one to one (:mod:`glimpse.models.convert.timm_deit`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from glimpse.models.layers import resize_position_embedding
from glimpse.models.vit import VisionTransformer


class DistilledVisionTransformer(VisionTransformer):
    """DeiT: a :class:`~glimpse.models.vit.VisionTransformer` with a distillation token.

    Takes the ViT's constructor arguments. ``num_prefix_tokens`` is 2 (class, distillation),
    ``pos_embed`` is ``(1, 2 + N, D)`` and ``dist_token`` ``(1, 1, D)``.

    ``forward(images (B, C, H, W))`` returns, in training mode, the pair
    ``(class_logits, distillation_logits)``, each ``(B, num_classes)``; in evaluation mode their
    mean ``(B, num_classes)``. Without a head (``num_classes`` 0 or None) the same holds for the
    two tokens' features ``(B, D)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + num_patches, self.embed_dim))
        self.head_dist = (
            nn.Linear(self.embed_dim, self.num_classes) if self.num_classes else nn.Identity()
        )
        self._init_weights()
        nn.init.trunc_normal_(self.dist_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The ViT's (position table, class token) and the distillation token."""
        return super().no_weight_decay() | {"dist_token"}

    def embed(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> z_0 (B, 2 + N, D)``: class token, distillation token, patches, plus
        the position table (resized to the image's grid when it differs from ``img_size``'s)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"Expected images (B, {self.in_chans}, H, W), got a tensor of shape "
                f"{tuple(x.shape)}."
            )
        grid = self._grid(x.shape[2], x.shape[3])
        batch = x.shape[0]
        prefix = [self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)]
        tokens = torch.cat([*prefix, self.patch_embed(x).flatten(1, 2)], dim=1)
        pos = resize_position_embedding(self.pos_embed, self.grid_size, grid, num_prefix_tokens=2)
        return self.pos_drop(tokens + pos)

    def forward_heads(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``LN(z_L) (B, 2 + N, D)`` -> ``(head(z_L^class), head_dist(z_L^distil))``, each
        ``(B, num_classes)`` (``(B, D)`` without heads)."""
        return self.head(tokens[:, 0]), self.head_dist(tokens[:, 1])

    def forward_head(self, tokens: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Both heads' logits in training; their mean (sec. 4, joint classifiers) in eval."""
        class_logits, dist_logits = self.forward_heads(tokens)
        if self.training:
            return class_logits, dist_logits
        return (class_logits + dist_logits) / 2


def _deit(defaults: dict[str, Any], kwargs: dict[str, Any]) -> DistilledVisionTransformer:
    return DistilledVisionTransformer(**{**defaults, **kwargs})


def deit_tiny_distilled_patch16(**kwargs: Any) -> DistilledVisionTransformer:
    """DeiT-Ti⚗ (paper Table 1): D=192, L=12, 3 heads, 5.9M parameters at 224 px."""
    return _deit(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), kwargs)


def deit_small_distilled_patch16(**kwargs: Any) -> DistilledVisionTransformer:
    """DeiT-S⚗ (paper Table 1): D=384, L=12, 6 heads, 22.4M parameters at 224 px."""
    return _deit(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), kwargs)


def deit_base_distilled_patch16(**kwargs: Any) -> DistilledVisionTransformer:
    """DeiT-B⚗ (paper Table 1): D=768, L=12, 12 heads, 87.3M parameters at 224 px."""
    return _deit(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), kwargs)


def deit_test(**kwargs: Any) -> DistilledVisionTransformer:
    """A tiny DeiT for tests and smoke runs: 32 px, P=4 (64 patches), D=32, L=2, 2 heads."""
    return _deit(
        dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10),
        kwargs,
    )
