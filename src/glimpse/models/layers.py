"""The layers the vision families share (ViT, DeiT, PVT, Swin, CLIP's towers).

* :class:`PatchEmbed`: an image cut into patches and projected, ``(B, C, H, W) ->
  (B, H/P, W/P, D)`` (ViT eq. 1; PVT's overlapping variant; Swin's patch partition);
* :class:`Mlp`: a Transformer block's feed-forward network;
* :class:`DropPath`: stochastic depth (Huang et al. 2016);
* :class:`QuickGELU` and :func:`activation_layer`: the MLP activations by config name;
* :func:`resize_position_embedding`: a position table resampled to another patch grid;
* :func:`as_pair`: a size as ``(height, width)``.

The parameter names (``proj``, ``norm``, ``fc1``, ``fc2``) are timm's, so the converters of
:mod:`glimpse.models.convert` and saved state dicts address them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.errors import ConfigError


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the sigmoid approximation of GELU (Hendrycks & Gimpel 2016,
    sec. 2) that OpenAI's CLIP models were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


#: The MLP activations, by config name.
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def activation_layer(name: str) -> type[nn.Module]:
    """The activation class called ``name`` in :data:`ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.net.act_layer={name!r} is not one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def as_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int is a square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_position_embedding(
    pos: Tensor,
    old_grid: int | Sequence[int],
    new_grid: int | Sequence[int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
) -> Tensor:
    """Resample a position table from one patch grid to another, keeping the token entries.

    ``pos (B, num_prefix_tokens + h*w, D)`` with its patch entries in row-major ``(h, w)``
    order -> ``(B, num_prefix_tokens + h'*w', D)``: the patch entries are laid out as a
    ``D``-channel ``h x w`` image and resized with ``mode`` (``align_corners=False``; bicubic is
    DeiT's choice for ViT, bilinear PVT's); the first ``num_prefix_tokens`` entries (class and
    distillation tokens) are copied unchanged. The same grid returns ``pos`` itself.
    """
    old_h, old_w = as_pair(old_grid)
    new_h, new_w = as_pair(new_grid)
    batch, length, dim = pos.shape
    if length != num_prefix_tokens + old_h * old_w:
        raise ValueError(
            f"Position table of {length} entries does not fit {num_prefix_tokens} token "
            f"entries and a {old_h}x{old_w} grid ({num_prefix_tokens + old_h * old_w} entries)."
        )
    if (old_h, old_w) == (new_h, new_w):
        return pos
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    grid = grid.reshape(batch, old_h, old_w, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_h, new_w), mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(batch, new_h * new_w, dim)
    return torch.cat([prefix, grid], dim=1)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch for whole samples.

    In training each sample's branch output ``(B, ...)`` is zeroed with probability ``drop_prob``
    and otherwise scaled by ``1 / (1 - drop_prob)``, so its expectation is unchanged; in
    evaluation it is the identity.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """A Transformer block's feed-forward network (ViT eq. 3; Vaswani et al. 2017, sec. 3.3):
    ``Linear -> GELU -> Dropout -> Linear -> Dropout`` on ``(..., D)``; ``act_layer`` replaces
    the GELU."""

    def __init__(
        self, dim: int, hidden_dim: int, drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Patch embedding: ``(B, C, H, W) -> (B, H/P, W/P, D)``, a channels-last grid of tokens in
    row-major order (``.flatten(1, 2)`` gives the ``(B, N, D)`` sequence).

    A Conv2d with kernel = stride = ``P`` applies the same linear map ``E`` to every ``P x P``
    patch (ViT's ``x_p E``, eq. 1; Swin's patch partition and linear embedding). Options:

    * ``bias=False``: no bias in the projection (CLIP's image tower);
    * ``overlapping=True``: kernel ``2P - 1`` with zero padding ``P - 1``, so neighbouring
      patches overlap (PVT v2's overlapping patch embedding, Wang et al. 2022, sec. 3.2);
    * ``norm=True``: a LayerNorm over ``D`` after the projection (Swin, PVT).
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        bias: bool = True,
        *,
        overlapping: bool = False,
        norm: bool = False,
    ) -> None:
        super().__init__()
        kernel = 2 * patch_size - 1 if overlapping else patch_size
        self.proj = nn.Conv2d(
            in_chans,
            embed_dim,
            kernel,
            stride=patch_size,
            padding=kernel // 2 if overlapping else 0,
            bias=bias,
        )
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))
