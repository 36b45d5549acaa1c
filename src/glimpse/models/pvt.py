"""Pyramid Vision Transformer (PVT; Wang et al. 2021, "Pyramid Vision Transformer: A Versatile
Backbone for Dense Prediction without Convolutions") and its v2 options (Wang et al. 2022, "PVT
v2: Improved Baselines with Pyramid Vision Transformer").

PVT v1 (§3.1, Fig. 3) has four stages. Stage ``i`` cuts its input map ``(B, C_{i-1}, H, W)`` into
``P_i x P_i`` patches, projects each to width ``C_i`` and layer-normalises it, giving
``N_i = (H/P_i)(W/P_i)`` tokens; it adds a learned position table, runs ``L_i`` pre-norm encoder
blocks and reshapes the tokens back to a map ``(B, C_i, H/P_i, W/P_i)`` for the next stage. With
``P = (4, 2, 2, 2)`` the maps have strides 4, 8, 16 and 32 like a ResNet's. For classification
the last stage prepends a class token, which the final LayerNorm and a linear head read (§3.1).

A block is ``z' = SRA(LN(z)) + z``, ``z'' = FFN(LN(z')) + z'``. Spatial-reduction attention
(§3.3, eqs. 2-4) takes queries from all ``N_i`` tokens but keys and values from a shorter
sequence: the tokens are laid out as the ``(H_i, W_i)`` map, reduced by a conv with
kernel = stride = ``R_i`` and layer-normalised, ``SR(x) = Norm(Reshape(x, R_i) W^S)``, so every
head computes ``softmax(q SR(k)^T / sqrt(d_head)) SR(v)`` over ``N_i / R_i^2`` keys.

PVT v2 (§3) changes, each a constructor option:

- ``overlapping_patches``: the patch embedding is a conv with stride ``P_i``, kernel
  ``2 P_i - 1`` and zero padding ``P_i - 1`` (7/4/3 for the first stage, 3/2/1 later; §3.2).
- ``conv_mlp``: a 3x3 depth-wise conv between the FFN's two linear layers (§3.3).
- ``linear_sra``: keys and values from the map average-pooled to a fixed ``7 x 7`` and passed
  through a 1x1 conv, LayerNorm and GELU, so attention costs linear in ``N_i`` (§3.1).
- ``position_embedding=False``: the zero padding of the overlapping convs carries position
  (§3.3), so there are no tables and any image size needs no interpolation.
- ``class_token=False``: the head reads the average of the last stage's tokens.
- ``stage_norms``: every stage, not only the last, ends with a LayerNorm (the authors' code).

Image size: images must have sides divisible by the total stride ``P_1 P_2 P_3 P_4`` (32 for
the presets). ``img_size`` fixes the grids the v1 position tables are built for; for another
size each table is resized bilinearly on the fly
(:func:`~glimpse.models.layers.resize_position_embedding`, as the authors' detection code does),
so the stored parameters keep their shape.

Norms follow the authors' code and timm: LayerNorm ``eps=1e-6`` in the blocks and at the end of
stages, ``1e-5`` in the patch embedding and the spatial reduction; exact GELU.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.layers import DropPath, Mlp, PatchEmbed, as_pair, resize_position_embedding

LINEAR_SRA_SIZE = 7
"""The side ``P`` of the pooled map that linear SRA reads keys and values from (PVT v2 §3.1)."""


def _to_map(tokens: Tensor, size: tuple[int, int]) -> Tensor:
    """Row-major tokens ``(B, h*w, C)`` -> the map ``(B, C, h, w)``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


class SpatialReductionAttention(nn.Module):
    """Multi-head attention with keys and values from a reduced map: SRA (v1 §3.3) or, with
    ``linear``, linear SRA (v2 §3.1); with neither (``sr_ratio`` 1) plain self-attention.

    Queries ``q = x W^Q`` come from all tokens; keys and values ``[k, v] = SR(x) W^{KV}`` from
    :meth:`reduce`. ``softmax(q k^T / sqrt(d_head)) v`` per head is computed by
    :func:`torch.nn.functional.scaled_dot_product_attention`, then projected by ``W^O``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        linear: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Width {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reduces = linear or sr_ratio > 1
        if self.reduces:
            kernel = 1 if linear else sr_ratio
            self.pool = nn.AdaptiveAvgPool2d(LINEAR_SRA_SIZE) if linear else nn.Identity()
            self.sr = nn.Conv2d(dim, dim, kernel_size=kernel, stride=kernel)
            self.norm = nn.LayerNorm(dim)
            self.act = nn.GELU() if linear else nn.Identity()

    def reduce(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """The sequence keys and values are read from: ``(B, h*w, C) -> (B, N', C)``.

        SRA: ``LN(Conv_{R x R, stride R}(map))``, ``N' = (h/R)(w/R)``. Linear SRA:
        ``GELU(LN(Conv_{1x1}(AvgPool_{7x7}(map))))``, ``N' = 49``. Otherwise ``x`` itself.
        """
        if not self.reduces:
            return x
        reduced = self.sr(self.pool(_to_map(x, size))).flatten(2).transpose(1, 2)
        return self.act(self.norm(reduced))

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, N, C)`` tokens of an ``(h, w)`` map (``N = h*w``, or any ``N`` without
        reduction) -> ``(B, N, C)``."""
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).reshape(batch, length, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(self.reduce(x, size)).reshape(batch, -1, 2, self.num_heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class ConvMlp(nn.Module):
    """The convolutional feed-forward of PVT v2 (§3.3) on tokens ``(B, h*w, C)`` of an
    ``(h, w)`` map: ``Linear -> [ReLU] -> DWConv 3x3 -> GELU -> Dropout -> Linear -> Dropout``.

    The ReLU after the first Linear is the authors' code for the linear-SRA models (``relu``).
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, relu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.dwconv(self.relu(_to_map(self.fc1(x), size))).flatten(2).transpose(1, 2)
        return self.drop2(self.fc2(self.drop1(self.act(x))))


class Block(nn.Module):
    """Pre-norm PVT encoder block, each residual branch under stochastic depth (v1 §3.2):
    ``z' = SRA(LN(z)) + z``, ``z'' = FFN(LN(z')) + z'``; ``(B, N, C) -> (B, N, C)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        linear_sra: bool = False,
        conv_mlp: bool = False,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(
            dim, num_heads, sr_ratio, linear_sra, qkv_bias, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (
            ConvMlp(dim, hidden, drop, relu=linear_sra) if conv_mlp else Mlp(dim, hidden, drop)
        )

    def _ffn(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.mlp(x, size) if isinstance(self.mlp, ConvMlp) else self.mlp(x)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, N, C)`` tokens of an ``(h, w)`` map -> ``(B, N, C)``."""
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        return x + self.drop_path(self._ffn(self.norm2(x), size))


class PVTStage(nn.Module):
    """One stage: patch embedding, optional class token and position table, ``depth`` blocks
    and an optional closing LayerNorm. ``(B, C_in, H, W) -> (tokens (B, [1 +] N, C),
    map (B, C, H/P, W/P))``; the class token, when there is one, comes first in the tokens and
    is left out of the map.

    ``grid``: the token grid the position table is built for, or None for no table.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        patch_size: int,
        grid: tuple[int, int] | None,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        *,
        class_token: bool = False,
        overlapping_patches: bool = False,
        conv_mlp: bool = False,
        linear_sra: bool = False,
        norm: bool = False,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.grid = grid
        self.num_prefix = int(class_token)
        self.patch_embed = PatchEmbed(
            patch_size, in_dim, dim, overlapping=overlapping_patches, norm=True
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, self.num_prefix + grid[0] * grid[1], dim)) if grid else None
        )
        self.pos_drop = nn.Dropout(drop) if grid else nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            Block(
                dim,
                num_heads,
                mlp_ratio,
                sr_ratio,
                linear_sra=linear_sra,
                conv_mlp=conv_mlp,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=rate,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6) if norm else nn.Identity()

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens, the class token prepended and the position table (resized to the
        image's grid) added: ``(B, C_in, H, W) -> ((B, [1 +] N, C), (h, w))``."""
        grid = self.patch_embed(x)
        tokens, size = grid.flatten(1, 2), (grid.shape[1], grid.shape[2])
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.pos_embed is not None:
            tokens = tokens + resize_position_embedding(
                self.pos_embed, self.grid, size, self.num_prefix, mode="bilinear"
            )
        return self.pos_drop(tokens), size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        tokens, size = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, size)
        tokens = self.norm(tokens)
        return tokens, _to_map(tokens[:, self.num_prefix :], size)


class PyramidVisionTransformer(nn.Module):
    """PVT v1 or v2 classifier, or backbone with ``num_classes`` 0 or None.

    Per-stage arguments are sequences with one entry per stage.

    Args:
        img_size: the image size ``(H, W)`` (or one int for square) the position tables are
            built for; other sizes divisible by the total stride are accepted at forward time.
        in_chans: image channels.
        num_classes: logits of the linear head; 0 or None leaves the head the identity, so
            ``forward`` returns the pooled feature ``(B, C_4)``.
        patch_sizes: ``P_i``, each stage's patch size (its stride).
        embed_dims: ``C_i``, each stage's width.
        depths: ``L_i``, blocks per stage.
        num_heads: ``N_i``, attention heads per stage.
        mlp_ratios: ``E_i``, the FFN's hidden width over ``C_i``.
        sr_ratios: ``R_i``, the reduction of SRA's keys and values (unused with ``linear_sra``).
        qkv_bias: whether the query and key/value projections have a bias.
        overlapping_patches, conv_mlp, linear_sra, position_embedding, class_token,
        stage_norms: v1 (defaults) or v2 choices, see the module docstring.
        drop_rate: dropout after the position embedding, the attention output projection and
            both FFN layers (the authors' placement).
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth rate of the last block; block ``l`` of all ``L`` blocks
            (counted across stages) uses ``drop_path_rate * l / (L - 1)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int | None = 1000,
        patch_sizes: Sequence[int] = (4, 2, 2, 2),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8.0, 8.0, 4.0, 4.0),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        overlapping_patches: bool = False,
        conv_mlp: bool = False,
        linear_sra: bool = False,
        position_embedding: bool = True,
        class_token: bool = True,
        stage_norms: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        per_stage = (patch_sizes, embed_dims, depths, num_heads, mlp_ratios, sr_ratios)
        if len({len(values) for values in per_stage}) != 1:
            raise ValueError(
                "patch_sizes, embed_dims, depths, num_heads, mlp_ratios and sr_ratios must name "
                "the same number of stages."
            )
        if class_token and (sr_ratios[-1] > 1 or linear_sra or conv_mlp):
            raise ValueError(
                "A class token needs the last stage to attend without spatial reduction "
                "(sr_ratios[-1] == 1, linear_sra=False) and a plain FFN (conv_mlp=False)."
            )
        self.img_size = as_pair(img_size)
        self.patch_sizes = tuple(patch_sizes)
        self.stride = math.prod(self.patch_sizes)
        self._check_size(*self.img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes or 0
        self.embed_dims = list(embed_dims)
        self.num_features = self.embed_dims[-1]
        self.class_token = class_token
        options = dict(
            overlapping_patches=overlapping_patches,
            conv_mlp=conv_mlp,
            linear_sra=linear_sra,
            qkv_bias=qkv_bias,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
        )
        rates = _drop_path_rates(drop_path_rate, depths)
        in_dims = [in_chans, *self.embed_dims[:-1]]
        self.stages = nn.ModuleList()
        for i, stride in enumerate(itertools.accumulate(self.patch_sizes, operator.mul)):
            last = i == len(depths) - 1
            grid = (self.img_size[0] // stride, self.img_size[1] // stride)
            stage = PVTStage(
                in_dims[i],
                self.embed_dims[i],
                self.patch_sizes[i],
                grid if position_embedding else None,
                depths[i],
                num_heads[i],
                mlp_ratios[i],
                sr_ratios[i],
                class_token=class_token and last,
                norm=stage_norms or last,
                drop_path=rates[i],
                **options,
            )
            self.stages.append(stage)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors' (and timm's) initialisation: truncated N(0, 0.02) for every Linear
        weight, position table and class token; convs N(0, 2 / fan_out) with ``fan_out =
        k_h k_w C_out / groups``; zero biases; LayerNorm weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
            elif isinstance(module, nn.Conv2d):
                fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
                nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
            if isinstance(module, nn.Linear | nn.Conv2d | nn.LayerNorm) and module.bias is not None:
                nn.init.zeros_(module.bias)
        embeddings = self.no_weight_decay()
        for name, parameter in self.named_parameters():
            if name in embeddings:
                nn.init.trunc_normal_(parameter, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay besides biases and norms (timm's convention): the
        position tables and the class token, which are embeddings, not weights."""
        return {
            f"stages.{i}.{name}"
            for i, stage in enumerate(self.stages)
            for name in ("pos_embed", "cls_token")
            if getattr(stage, name) is not None
        }

    def _check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the total stride {self.stride} "
                f"of the patch embeddings {self.patch_sizes}; resize or crop the images to a "
                f"multiple of it."
            )

    def _run_stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, C, H, W) -> (last stage's tokens, every stage's map)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"Expected images (B, {self.in_chans}, H, W), got a tensor of shape "
                f"{tuple(x.shape)}."
            )
        self._check_size(x.shape[2], x.shape[3])
        maps = []
        for stage in self.stages:
            tokens, x = stage(x)
            maps.append(x)
        return tokens, maps

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, [1 +] N_4, C_4)``: the last stage's tokens after its LayerNorm,
        the class token first when there is one, then the ``(H/S, W/S)`` grid row-major for the
        total stride ``S``."""
        return self._run_stages(x)[0]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W) ->`` the four stages' maps ``(B, C_i, H / S_i, W / S_i)``, ``S_i =
        P_1 ... P_i`` (strides 4, 8, 16, 32 for the presets), for dense-prediction necks. A map
        is taken after the stage's closing LayerNorm when it has one (v2 every stage, v1 the
        last) and never holds the class token."""
        return self._run_stages(x)[1]

    def forward_head(self, tokens: Tensor) -> Tensor:
        """``(B, [1 +] N_4, C_4)`` -> the head applied to the class token, or to the average of
        the tokens without one: ``(B, num_classes)``, or ``(B, C_4)`` without a head."""
        return self.head(tokens[:, 0] if self.class_token else tokens.mean(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> logits (B, num_classes)`` (``(B, C_4)`` without a head)."""
        return self.forward_head(self.forward_features(x))


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Per stage, its blocks' stochastic depth rates: ``rate * l / (L - 1)`` for block ``l`` of
    all ``L`` blocks, rising linearly from 0 across stages."""
    total = sum(depths)
    rates = [rate * j / max(total - 1, 1) for j in range(total)]
    ends = list(itertools.accumulate(depths))
    return [rates[end - depth : end] for end, depth in zip(ends, depths, strict=True)]


def _pvt(defaults: dict[str, Any], kwargs: dict[str, Any]) -> PyramidVisionTransformer:
    return PyramidVisionTransformer(**{**defaults, **kwargs})


_V1 = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
_V2 = dict(
    overlapping_patches=True,
    conv_mlp=True,
    position_embedding=False,
    class_token=False,
    stage_norms=True,
)


def pvt_tiny(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-Tiny (v1 Table 1): P 4-2-2-2, C 64-128-320-512, depths 2-2-2-2, heads 1-2-5-8,
    E 8-8-4-4, R 8-4-2-1; 13.2M parameters at 224 px."""
    return _pvt(dict(_V1, depths=(2, 2, 2, 2)), kwargs)


def pvt_small(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-Small (v1 Table 1): as PVT-Tiny with depths 3-4-6-3; 24.5M parameters at 224 px."""
    return _pvt(dict(_V1, depths=(3, 4, 6, 3)), kwargs)


def pvt_medium(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-Medium (v1 Table 1): as PVT-Tiny with depths 3-4-18-3; 44.2M parameters at 224 px."""
    return _pvt(dict(_V1, depths=(3, 4, 18, 3)), kwargs)


def pvt_large(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-Large (v1 Table 1): as PVT-Tiny with depths 3-8-27-3; 61.4M parameters at 224 px."""
    return _pvt(dict(_V1, depths=(3, 8, 27, 3)), kwargs)


def pvt_v2_b0(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-v2-B0 (v2 Table 1): C 32-64-160-256, depths 2-2-2-2, heads 1-2-5-8, E 8-8-4-4,
    R 8-4-2-1; 3.7M parameters."""
    return _pvt(dict(_V1, **_V2, embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)), kwargs)


def pvt_v2_b1(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-v2-B1 (v2 Table 1): C 64-128-320-512, depths 2-2-2-2; 14.0M parameters."""
    return _pvt(dict(_V1, **_V2, depths=(2, 2, 2, 2)), kwargs)


def pvt_v2_b2(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-v2-B2 (v2 Table 1): C 64-128-320-512, depths 3-4-6-3; 25.4M parameters."""
    return _pvt(dict(_V1, **_V2, depths=(3, 4, 6, 3)), kwargs)


def pvt_v2_b2_li(**kwargs: Any) -> PyramidVisionTransformer:
    """PVT-v2-B2-Li (v2 Table 6): PVT-v2-B2 with linear SRA; 22.6M parameters."""
    return _pvt(dict(_V1, **_V2, depths=(3, 4, 6, 3), linear_sra=True), kwargs)


_TEST = dict(
    img_size=32,
    patch_sizes=(2, 2, 2, 2),
    embed_dims=(8, 16, 24, 32),
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 2, 4),
    mlp_ratios=(2, 2, 2, 2),
    sr_ratios=(4, 2, 2, 1),
    num_classes=10,
)


def pvt_test(**kwargs: Any) -> PyramidVisionTransformer:
    """A tiny PVT v1 for tests and smoke runs: 32 px, P 2-2-2-2 (maps 16, 8, 4, 2), C 8-16-24-32,
    depths 1-1-2-1, heads 1-2-2-4, E 2, R 4-2-2-1 (keys from 4x4, 4x4, 2x2 and 2x2 maps)."""
    return _pvt(dict(_TEST), kwargs)


def pvt_v2_test(**kwargs: Any) -> PyramidVisionTransformer:
    """:func:`pvt_test`'s shapes with the v2 options (overlapping patches, convolutional FFN, no
    position tables or class token, a LayerNorm closing every stage)."""
    return _pvt(dict(_TEST, **_V2), kwargs)
