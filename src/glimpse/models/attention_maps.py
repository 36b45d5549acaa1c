"""The class token's self-attention in the last block of a ViT, head by head: DINO's maps.

Caron et al. 2021 (sec. 4.2.1 and fig. 1/3) show that the class token's attention over the
patches in the last block of a self-supervised ViT segments the objects without any labels,
different heads attending to different parts. For images ``(B, 3, H, W)`` the map of head ``h``
is row 0 (the class token) of the last block's attention probabilities over the patch columns,
``A_L[:, h, 0, 1:]`` reshaped to the ``(H / P, W / P)`` grid (DINO's ``visualize_attention.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glimpse.models.vit import VisionTransformer


def has_attention_maps(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is a ViT whose blocks can return their attention."""
    return isinstance(backbone, VisionTransformer)


@torch.no_grad()
def class_token_attention(vit: VisionTransformer, images: Tensor) -> Tensor:
    """``images (B, 3, H, W) -> (B, heads, H / P, W / P)``: the last block's attention of the
    class token over the patches, per head (each map sums to at most 1: the class and other
    prefix tokens take the rest)."""
    _, attentions = vit.forward_features(images, return_attention=True)
    last = attentions[-1][:, :, 0, vit.num_prefix_tokens :]
    grid_h, grid_w = images.shape[2] // vit.patch_size, images.shape[3] // vit.patch_size
    return last.reshape(last.shape[0], last.shape[1], grid_h, grid_w)
