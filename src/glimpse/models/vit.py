"""Vision Transformer (ViT; Dosovitskiy et al. 2021, "An image is worth 16x16 words").

An image ``(B, C, H, W)`` is cut into ``N = (H/P)(W/P)`` patches of ``P x P`` pixels, each
projected linearly to width ``D``; a learned class token is prepended and learned position
embeddings are added (eq. 1)::

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                          (2)
    z_l = MLP(LN(z'_l)) + z'_l,            l = 1 ... L         (3)
    y = LN(z_L^0)                                              (4)

and a linear head maps ``y (B, D)`` to logits ``(B, num_classes)``.

Image size: ``img_size`` fixes the grid the position table ``E_pos`` is built for. Any image
whose sides are multiples of ``patch_size`` is accepted at forward time; for another grid the
table is resized bicubically on the fly
(:func:`~glimpse.models.layers.resize_position_embedding`, as DeiT does when fine-tuning at a
higher resolution), so the stored parameter keeps its shape and checkpoints stay
interchangeable. To change the stored table itself (loading a 224 px checkpoint into a 384 px
model), apply that function to the ``pos_embed`` entry.

Names and constructor arguments follow timm's ``VisionTransformer``; LayerNorm ``eps=1e-6``
and exact GELU as in the paper's code, timm and torchvision.

CLIP's image tower (Radford et al. 2021) is this ViT with four options, all off by default:
``pre_norm`` (a LayerNorm on ``z_0`` before the blocks, CLIP's ``ln_pre``), ``patch_bias=False``
(no bias in the patch projection), ``act_layer="quick_gelu"`` (``x * sigmoid(1.702 x)``, the
activation of OpenAI's released weights) and ``norm_eps=1e-5``. :class:`Block` with
``causal=True`` is the masked block of CLIP's text Transformer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.attention_rollout import attention_rollout
from glimpse.models.layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    activation_layer,
    as_pair,
    resize_position_embedding,
)


class Attention(nn.Module):
    """Multi-head self-attention, every token attending to every token (MSA of eq. 2).

    ``softmax(Q K^T / sqrt(d_head)) V`` per head, computed by
    :func:`torch.nn.functional.scaled_dot_product_attention`; with ``return_attention`` the
    softmax is computed explicitly so the attention probabilities can be returned. With
    ``causal`` token ``t`` attends to tokens ``0..t`` only (a language model's mask).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, T, D) -> ((B, T, D), attention (B, heads, T, T) or None)``.

        The returned attention is the softmax before attention dropout; each row sums to 1.
        """
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        attention = None
        if return_attention:
            scores = q @ k.transpose(-2, -1) * head_dim**-0.5
            if self.causal:
                future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            attention = scores.softmax(dim=-1)
            out = F.dropout(attention, drop) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=self.causal)
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return self.proj_drop(self.proj(out)), attention


class Block(nn.Module):
    """Pre-norm encoder block, eqs. (2)-(3), each residual branch under stochastic depth.

    ``causal`` masks the attention to earlier tokens, ``act_layer`` is the MLP's activation and
    ``norm_eps`` the LayerNorms' epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        causal: bool = False,
        act_layer: type[nn.Module] = nn.GELU,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, causal)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, act_layer)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, T, D) -> ((B, T, D), attention (B, heads, T, T) or None)``."""
        out, attention = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x))), attention


class ConvStem(nn.Module):
    """A convolutional stem in place of the patch projection (Xiao et al. 2021, "Early
    Convolutions Help Transformers See Better"; the ViT paper's hybrid input, sec. 3.1):
    ``(B, C, H, W) -> (B, H/P, W/P, D)`` through ``log2 P`` 3x3 stride-2 convolutions with
    BatchNorm and ReLU, widths doubling up to ``D``, then a 1x1 convolution to ``D``.

    Tokens come out as :class:`~glimpse.models.layers.PatchEmbed`'s do, a channels-last grid
    ``(B, H/P, W/P, D)`` with one token per ``P x P`` patch; each sees a slightly larger
    neighbourhood through the 3x3 kernels. The stem trains faster and more stably on small
    datasets than the linear projection.
    ``bias=False`` drops the bias of the final 1x1 convolution.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True) -> None:
        super().__init__()
        stages = patch_size.bit_length() - 1
        if patch_size < 2 or 2**stages != patch_size:
            raise ValueError(
                f"A convolutional stem needs a patch size that is a power of two, not {patch_size}."
            )
        layers: list[nn.Module] = []
        width_in = in_chans
        for stage in range(stages):
            width = max(embed_dim >> (stages - 1 - stage), 16)
            layers += [
                nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            width_in = width
        layers.append(nn.Conv2d(width_in, embed_dim, kernel_size=1, bias=bias))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


#: The ways of turning an image into patch tokens.
STEMS: dict[str, type[nn.Module]] = {"patchify": PatchEmbed, "conv": ConvStem}


class VisionTransformer(nn.Module):
    """ViT classifier, or backbone with ``num_classes`` 0 or None.

    Args:
        img_size: the image size ``(H, W)`` (or one int for square) the position table is built
            for; other sizes are accepted at forward time (see the module docstring).
        patch_size: ``P``, the side of a square patch.
        in_chans: ``C``, image channels.
        num_classes: logits of the linear head; 0 or None leaves the head the identity, so
            ``forward`` returns the pooled feature ``y (B, D)``.
        embed_dim: ``D``, the token width.
        depth: ``L`` encoder blocks.
        num_heads: attention heads per block.
        mlp_ratio: the MLP's hidden width over ``D``.
        qkv_bias: whether the query/key/value projection has a bias.
        drop_rate: dropout after the position embedding, the attention output projection and
            both MLP layers (the paper's and torchvision's placement).
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth rate of the last block; block ``l`` uses
            ``drop_path_rate * l / (L - 1)``, rising linearly from 0.
        stem: ``patchify`` (the paper's linear patch projection,
            :class:`~glimpse.models.layers.PatchEmbed`) or ``conv`` (:class:`ConvStem`, for
            training from scratch on small datasets).
        pre_norm: a LayerNorm ``norm_pre`` on ``z_0`` before the first block (CLIP's
            ``ln_pre``, timm's ``pre_norm``).
        patch_bias: whether the patch projection has a bias (CLIP's has none).
        act_layer: the MLP activation, ``gelu`` (exact) or ``quick_gelu`` (OpenAI's CLIP).
        norm_eps: every LayerNorm's epsilon (CLIP's is PyTorch's default, 1e-5).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int | None = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stem: str = "patchify",
        pre_norm: bool = False,
        patch_bias: bool = True,
        act_layer: str = "gelu",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.img_size = as_pair(img_size)
        self.patch_size = patch_size
        self.grid_size = self._grid(*self.img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes or 0
        #: Tokens before the patches (the class token); DeiT adds its distillation token.
        self.num_prefix_tokens = 1
        self.embed_dim = self.num_features = embed_dim
        if stem not in STEMS:
            raise ValueError(f"model.net.stem={stem!r} is not one of {', '.join(STEMS)}.")
        self.patch_embed = STEMS[stem](patch_size, in_chans, embed_dim, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        act = activation_layer(act_layer)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                rate,
                act_layer=act,
                norm_eps=norm_eps,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT initialisation: truncated N(0, 0.02) for the class token, the position
        table and every Linear weight; zero biases; LayerNorm weight 1, bias 0. The patch
        projection keeps PyTorch's Conv2d default, as in timm."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay besides biases and norms (timm's convention):
        the position table and the class token, which are embeddings, not weights."""
        return {"pos_embed", "cls_token"}

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the patch size "
                f"{self.patch_size}; resize or crop the images to a multiple of it."
            )
        return height // self.patch_size, width // self.patch_size

    def embed(self, x: Tensor) -> Tensor:
        """Eq. (1): ``(B, C, H, W) -> z_0 (B, 1 + N, D)``, the position table resized to the
        image's grid when it differs from ``img_size``'s."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"Expected images (B, {self.in_chans}, H, W), got a tensor of shape "
                f"{tuple(x.shape)}."
            )
        grid = self._grid(x.shape[2], x.shape[3])
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls_token, self.patch_embed(x).flatten(1, 2)], dim=1)
        pos = resize_position_embedding(self.pos_embed, self.grid_size, grid)
        return self.pos_drop(tokens + pos)

    def forward_features(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``(B, C, H, W) -> LN(z_L) (B, 1 + N, D)``, class token first, patches row-major.

        With ``return_attention`` also returns each block's attention probabilities
        ``(B, heads, 1 + N, 1 + N)``, first block first (for attention rollout).
        """
        z = self.norm_pre(self.embed(x))
        attentions = []
        for block in self.blocks:
            z, attention = block(z, return_attention)
            if attention is not None:
                attentions.append(attention)
        z = self.norm(z)
        return (z, attentions) if return_attention else z

    def forward_head(self, tokens: Tensor) -> Tensor:
        """``(B, 1 + N, D)`` -> the head applied to ``y = LN(z_L^0)``: ``(B, num_classes)``,
        or ``(B, D)`` without a head."""
        return self.head(tokens[:, 0])

    def class_token_rollout(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, H / P, W / P)``: the class token's row of the attention
        rollout (:func:`~glimpse.models.attention_rollout.attention_rollout`) over the patches,
        the share of each patch in the representation the head reads."""
        _, attentions = self.forward_features(x, return_attention=True)
        rollout = attention_rollout(attentions)
        grid_h, grid_w = self._grid(x.shape[2], x.shape[3])
        return rollout[:, 0, self.num_prefix_tokens :].reshape(-1, grid_h, grid_w)

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``(B, C, H, W) -> logits (B, num_classes)`` (``(B, D)`` without a head), and with
        ``return_attention`` the list of per-block attention maps of :meth:`forward_features`."""
        if return_attention:
            tokens, attentions = self.forward_features(x, return_attention=True)
            return self.forward_head(tokens), attentions
        return self.forward_head(self.forward_features(x))


def _vit(defaults: dict[str, Any], kwargs: dict[str, Any]) -> VisionTransformer:
    return VisionTransformer(**{**defaults, **kwargs})


def vit_tiny_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-Ti/16 (DeiT-Ti sizes): D=192, L=12, 3 heads, 5.7M parameters at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), kwargs)


def vit_small_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16 (DeiT-S sizes): D=384, L=12, 6 heads, 22M parameters at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), kwargs)


def vit_base_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16 (paper Table 1): D=768, L=12, 12 heads, 86M parameters at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), kwargs)


def vit_base_patch32(**kwargs: Any) -> VisionTransformer:
    """ViT-B/32 (paper Table 1): D=768, L=12, 12 heads, 88M parameters at 224 px."""
    return _vit(dict(patch_size=32, embed_dim=768, depth=12, num_heads=12), kwargs)


def vit_large_patch16(**kwargs: Any) -> VisionTransformer:
    """ViT-L/16 (paper Table 1): D=1024, L=24, 16 heads, 304M parameters at 224 px."""
    return _vit(dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16), kwargs)


def vit_nano_conv(**kwargs: Any) -> VisionTransformer:
    """A ViT for small images trained from scratch on a CPU: P=8 with the convolutional stem,
    D=96, L=4, 4 heads, MLP ratio 2 (0.37M parameters); 48 px images make a 6x6 grid."""
    return _vit(
        dict(patch_size=8, embed_dim=96, depth=4, num_heads=4, mlp_ratio=2.0, stem="conv"),
        kwargs,
    )


def vit_test(**kwargs: Any) -> VisionTransformer:
    """A tiny ViT for tests and smoke runs: 32 px, P=4 (64 patches), D=32, L=2, 2 heads."""
    return _vit(
        dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10),
        kwargs,
    )
