"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows").

An image ``(B, C, H, W)`` is cut into ``P x P`` patches, each projected linearly to width ``D``
and layer-normalised, giving a map ``(B, H/P, W/P, D)``. Stages of Swin blocks follow; every
stage after the first starts with patch merging, which concatenates each ``2 x 2`` neighbourhood
(``4C`` channels), normalises it and projects it to ``2C``, halving the resolution. Blocks come
in pairs (eq. 3)::

    ẑ^l   = W-MSA(LN(z^{l-1})) + z^{l-1}
    z^l   = MLP(LN(ẑ^l)) + ẑ^l
    ẑ^l+1 = SW-MSA(LN(z^l)) + z^l
    z^l+1 = MLP(LN(ẑ^l+1)) + ẑ^l+1

W-MSA is self-attention inside non-overlapping ``M x M`` windows with a learned relative
position bias ``B`` (eq. 4)::

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V

read from a table of ``(2M-1)^2`` entries per head. SW-MSA first rolls the map by ``-M//2`` on
both axes, so the windows straddle the previous ones; the windows along the bottom and right
edges then hold tokens that wrapped around from the opposite edge, and an attention mask stops
them attending to each other (the paper's "efficient batch computation for shifted
configuration"). The final map is layer-normalised, averaged over space and fed to a linear head.

Image size: any image whose sides are multiples of ``patch_size``. Following torchvision's
``SwinTransformer``, a block zero-pads its (normalised) map on the bottom and right to a multiple
of ``M`` before partitioning and crops the padding afterwards (padded tokens are attended to,
not masked), a block does not shift along an axis that one window already covers, and patch
merging zero-pads odd sides. ``img_size`` is only the nominal size, checked at construction.

Names and constructor arguments follow timm's ``SwinTransformer``; LayerNorm ``eps=1e-5`` and
exact GELU as in the paper's code, timm and torchvision.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.layers import DropPath, Mlp, PatchEmbed, as_pair


def relative_position_index(window_size: int) -> Tensor:
    """Index into the ``((2M-1)^2, heads)`` bias table for each pair of tokens of a window.

    Tokens are numbered row-major; for query ``i`` at ``(y_i, x_i)`` and key ``j`` at
    ``(y_j, x_j)`` the entry is ``(y_i - y_j + M - 1) (2M - 1) + (x_i - x_j + M - 1)``.
    Returns ``(M^2, M^2)`` int64.
    """
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :] + window_size - 1
    return relative[0] * (2 * window_size - 1) + relative[1]


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``(B, H, W, C) -> (B, nW, M^2, C)``: windows in row-major order, tokens row-major inside
    each; ``H`` and ``W`` must be multiples of ``M``."""
    batch, height, width, channels = x.shape
    x = x.reshape(
        batch, height // window_size, window_size, width // window_size, window_size, channels
    )
    return x.transpose(2, 3).reshape(batch, -1, window_size * window_size, channels)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`window_partition`: ``(B, nW, M^2, C) -> (B, H, W, C)``."""
    batch, _, _, channels = windows.shape
    x = windows.reshape(
        batch, height // window_size, width // window_size, window_size, window_size, channels
    )
    return x.transpose(2, 3).reshape(batch, height, width, channels)


def _wrapped(size: int, shift: int, device: torch.device) -> Tensor:
    """Whether each position ``0 ... L-1`` of an axis rolled by ``-shift`` holds a token that
    wrapped around from the start of the axis: the last ``shift`` positions. ``(L,)`` int64."""
    return (torch.arange(size, device=device) >= size - shift).long()


def shifted_window_mask(
    height: int,
    width: int,
    window_size: int,
    shift: tuple[int, int],
    device: torch.device | None = None,
) -> Tensor:
    """The SW-MSA attention mask for a map ``(H, W)`` rolled by ``-shift``: ``(nW, M^2, M^2)``.

    Entry ``[w, i, j]`` is 0 where tokens ``i`` and ``j`` of window ``w`` come from the same
    region of the un-rolled map and ``-inf`` where they do not; added to the attention logits,
    it gives the latter exactly zero weight. The paper (Fig. 4) splits each axis into the bands
    ``[0, L-M)``, ``[L-M, L-s)``, ``[L-s, L)``; since ``L-M`` falls on a window boundary, two
    tokens of one window share a region exactly when they wrapped around alike on both axes.
    """
    device = torch.device("cpu") if device is None else device
    rows = _wrapped(height, shift[0], device)
    cols = _wrapped(width, shift[1], device)
    regions = (2 * rows[:, None] + cols[None, :]).reshape(1, height, width, 1)
    regions = window_partition(regions, window_size)[0, :, :, 0]
    differ = regions[:, :, None] != regions[:, None, :]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with relative position bias (eq. 4).

    ``softmax(Q K^T / sqrt(d_head) + B + mask) V`` per window and head. On CUDA it runs through
    :func:`~torch.nn.functional.scaled_dot_product_attention` with ``B + mask`` as the float
    ``attn_mask`` (the memory-efficient kernel, as timm's fused path for Swin). Elsewhere, and
    when the attention is returned, it is computed explicitly, as torchvision does: a window's
    ``M^2 x M^2`` scores are small, and on the CPU scaled_dot_product_attention with a float
    mask falls back to its math kernel plus a guard for fully masked rows, which made it
    measurably slower (``benchmarks/classification.py``). ``fused`` (an attribute) forces one
    path: True the fused one, False the explicit one, None (the default) by device.
    """

    #: scaled_dot_product_attention (True), explicit (False), or by device (None: on CUDA).
    fused: bool | None = None

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Width {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def no_weight_decay(self) -> set[str]:
        """The bias table is a learned embedding of offsets, not a weight: AdamW leaves it
        undecayed (the paper's and timm's setting)."""
        return {"relative_position_bias_table"}

    def relative_position_bias(self) -> Tensor:
        """``B`` of eq. (4) for every head: ``(heads, M^2, M^2)``."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def forward(
        self, windows: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``(B, nW, M^2, C)`` and a mask ``(nW, M^2, M^2)`` or None ->
        ``((B, nW, M^2, C), attention (B, nW, heads, M^2, M^2) or None)``.

        The returned attention is the softmax before attention dropout; each row sums to 1.
        """
        batch, num_windows, length, dim = windows.shape
        head_dim = dim // self.num_heads
        qkv = self.qkv(windows).reshape(batch, num_windows, length, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        bias = self.relative_position_bias()
        if mask is not None:
            bias = bias + mask[:, None]
        bias = bias.to(q.dtype)
        drop = self.attn_drop if self.training else 0.0
        fused = windows.is_cuda if self.fused is None else self.fused
        attention = None
        if fused and not return_attention:
            # Windows of every image in one batch (B * nW, heads, M^2, d_head); a shifted
            # block's per-window bias (nW, heads, M^2, M^2) repeated for every image.
            if bias.ndim == 4:
                bias = bias.expand(batch, *bias.shape).flatten(0, 1)
            q, k, v = (t.flatten(0, 1) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
            out = out.unflatten(0, (batch, num_windows))
        else:
            scores = (q * head_dim**-0.5) @ k.transpose(-2, -1) + bias
            attention = scores.softmax(dim=-1)
            out = F.dropout(attention, drop) @ v
        out = out.transpose(2, 3).reshape(batch, num_windows, length, dim)
        return self.proj_drop(self.proj(out)), attention


class SwinBlock(nn.Module):
    """Pre-norm Swin block, one half of eq. (3): W-MSA with ``shift_size`` 0, SW-MSA with
    ``shift_size`` ``M//2``; each residual branch under stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def _window_attention(self, x: Tensor, return_attention: bool) -> tuple[Tensor, Tensor | None]:
        """(S)W-MSA on a normalised map ``(B, H, W, C)``: pad to multiples of ``M``, roll,
        attend within windows under the mask, roll back and crop."""
        height, width = x.shape[1:3]
        size = self.window_size
        if height % size or width % size:  # F.pad copies the map even when it adds nothing
            x = F.pad(x, (0, 0, 0, -width % size, 0, -height % size))
        padded = x.shape[1:3]
        shift = tuple(self.shift_size if size < side else 0 for side in padded)
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            mask = shifted_window_mask(*padded, size, shift, device=x.device)
        windows, attention = self.attn(window_partition(x, size), mask, return_attention)
        x = window_reverse(windows, size, *padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :height, :width], attention

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, H, W, C) -> ((B, H, W, C), attention (B, nW, heads, M^2, M^2) or None)``.

        For a shifted block the windows of the attention are those of the rolled, padded map.
        """
        out, attention = self._window_attention(self.norm1(x), return_attention)
        x = x + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x))), attention


class PatchMerging(nn.Module):
    """``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)``: each ``2 x 2`` neighbourhood
    concatenated in the order (0, 0), (1, 0), (0, 1), (1, 1) (row, column offsets), then
    LayerNorm over ``4C`` and a Linear ``4C -> 2C`` without bias. Odd sides are zero-padded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = x.reshape(batch, (height + 1) // 2, 2, (width + 1) // 2, 2, channels)
        x = x.permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Optional patch merging from width ``dim // 2``, then ``depth`` blocks alternating W-MSA and
    SW-MSA: ``(B, H, W, C') -> (B, H', W', dim)``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        downsample: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: list[float] | None = None,
    ) -> None:
        super().__init__()
        rates = drop_path or [0.0] * depth
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                shift_size=window_size // 2 if i % 2 else 0,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=rates[i],
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``-> (map, the blocks' attention maps if return_attention else [])``."""
        x = self.downsample(x)
        attentions = []
        for block in self.blocks:
            x, attention = block(x, return_attention)
            if attention is not None:
                attentions.append(attention)
        return x, attentions


class SwinTransformer(nn.Module):
    """Swin classifier, or backbone with ``num_classes`` 0 or None.

    Args:
        img_size: the nominal image size ``(H, W)`` (or one int for square); any size whose sides
            are multiples of ``patch_size`` is accepted at forward time.
        patch_size: ``P``, the side of a square patch.
        in_chans: image channels.
        num_classes: logits of the linear head; 0 or None leaves the head the identity, so
            ``forward`` returns the pooled feature ``(B, num_features)``.
        embed_dim: ``C``, the width of the first stage; stage ``i`` has width ``C * 2^i``.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: ``M``, the side of a square attention window.
        mlp_ratio: the MLP's hidden width over the block width.
        qkv_bias: whether the query/key/value projection has a bias.
        drop_rate: dropout after the attention output projection and both MLP layers
            (torchvision's placement).
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth rate of the last block; block ``l`` of all ``L`` blocks
            (counted across stages) uses ``drop_path_rate * l / (L - 1)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int | None = 1000,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must name the same "
                f"number of stages."
            )
        self.patch_size = patch_size
        self.img_size = as_pair(img_size)
        self._check_size(*self.img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes or 0
        self.window_size = window_size
        self.stage_dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.stage_dims[-1]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm=True)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList(
            SwinStage(
                dim,
                depth,
                heads,
                window_size,
                downsample=i > 0,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
            )
            for i, (dim, depth, heads) in enumerate(
                zip(self.stage_dims, depths, num_heads, strict=True)
            )
        )
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's and torchvision's Swin initialisation: truncated N(0, 0.02) for the bias tables
        and every Linear weight; zero biases; LayerNorm weight 1, bias 0; the patch projection
        keeps PyTorch's Conv2d default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, WindowAttention):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)

    def _check_size(self, height: int, width: int) -> None:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the patch size "
                f"{self.patch_size}; resize or crop the images to a multiple of it."
            )

    def forward_features(
        self, x: Tensor, return_stages: bool = False, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]] | tuple[Tensor, list[Tensor], list[Tensor]]:
        """``(B, C, H, W) -> LN(final map) (B, H / (P 2^(S-1)), W / (P 2^(S-1)), num_features)``
        for ``S`` stages (sides rounded up where patch merging padded them).

        With ``return_stages`` the list of each stage's output map ``(B, H_i, W_i, C 2^i)``
        (before the final LayerNorm; for detection necks) follows the map, and with
        ``return_attention`` the list of every block's attention ``(B, nW, heads, M^2, M^2)``,
        first block first, follows that.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"Expected images (B, {self.in_chans}, H, W), got a tensor of shape "
                f"{tuple(x.shape)}."
            )
        self._check_size(x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        stages, attentions = [], []
        for layer in self.layers:
            x, layer_attentions = layer(x, return_attention)
            stages.append(x)
            attentions.extend(layer_attentions)
        extras = ([stages] if return_stages else []) + ([attentions] if return_attention else [])
        features = self.norm(x)
        return (features, *extras) if extras else features

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, H', W', num_features)`` -> the head applied to the spatial average:
        ``(B, num_classes)``, or ``(B, num_features)`` without a head."""
        return self.head(features.mean(dim=(1, 2)))

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``(B, C, H, W) -> logits (B, num_classes)`` (``(B, num_features)`` without a head), and
        with ``return_attention`` the per-block attention maps of :meth:`forward_features`."""
        if return_attention:
            features, attentions = self.forward_features(x, return_attention=True)
            return self.forward_head(features), attentions
        return self.forward_head(self.forward_features(x))


def _swin(defaults: dict[str, Any], kwargs: dict[str, Any]) -> SwinTransformer:
    return SwinTransformer(**{**defaults, **kwargs})


def swin_tiny(**kwargs: Any) -> SwinTransformer:
    """Swin-T (paper Table 1): C=96, depths 2-2-6-2, heads 3-6-12-24, M=7, 28.3M parameters;
    the paper trains it with drop_path_rate 0.2."""
    return _swin(dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)), kwargs)


def swin_small(**kwargs: Any) -> SwinTransformer:
    """Swin-S (paper Table 1): C=96, depths 2-2-18-2, heads 3-6-12-24, M=7, 49.6M parameters;
    the paper trains it with drop_path_rate 0.3."""
    return _swin(dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)), kwargs)


def swin_base(**kwargs: Any) -> SwinTransformer:
    """Swin-B (paper Table 1): C=128, depths 2-2-18-2, heads 4-8-16-32, M=7, 87.8M parameters;
    the paper trains it with drop_path_rate 0.5."""
    return _swin(dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)), kwargs)


def swin_test(**kwargs: Any) -> SwinTransformer:
    """A tiny Swin for tests and smoke runs: 32 px, P=2 (a 16x16 map, then 8x8), C=16,
    depths 2-2, heads 1-2, M=4, so both stages use shifted windows with the mask."""
    return _swin(
        dict(
            img_size=32,
            patch_size=2,
            embed_dim=16,
            depths=(2, 2),
            num_heads=(1, 2),
            window_size=4,
            num_classes=10,
        ),
        kwargs,
    )
