"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; the lecture's CLIP slides): an image encoder and a text encoder that map into one
joint embedding space of width ``E``.

* Image encoder ``(B, 3, H, W) -> (B, E)``, chosen by ``vision["kind"]``:

  - ``vit``: glimpse's :class:`~glimpse.models.vit.VisionTransformer` with CLIP's options (a
    LayerNorm before the blocks, no patch-projection bias, LayerNorm eps 1e-5), the final
    LayerNorm of the class token, then a linear projection (no bias) to ``E``;
  - ``modified_resnet``: CLIP's ResNet with attention pooling
    (:class:`~glimpse.models.clip_resnet.ModifiedResNet`), whose pool projects to ``E``;
  - ``resnet``: a torchvision ResNet trunk (small and quick on a CPU, or initialised from
    ImageNet weights) with mean pooling and a linear projection, or CLIP's attention pooling.

* Text encoder ``tokens (B, L) -> (B, E)`` (:class:`TextTransformer`): token embeddings plus
  learned position embeddings, pre-norm Transformer blocks with a causal mask, a final
  LayerNorm, the features at the end-token position, and a linear projection (no bias).

* A learnable temperature: ``logit_scale = log(1 / 0.07)`` at first, its exponential clamped
  at 100 (sec. 2.5), so that the logits of the contrastive loss are
  ``exp(logit_scale) * I_e T_e^T`` for the L2-normalised embeddings ``I_e``, ``T_e``.

Constructor (the CLIP task fills ``vocab_size`` and ``context_length`` from the tokenizer)::

    CLIP(vocab_size=49408, context_length=77, embed_dim=512, vision=None,
         text_width=512, text_layers=12, text_heads=8, text_mlp_ratio=4.0,
         quick_gelu=False, pad_id=0, init_logit_scale=log(1 / 0.07), max_logit_scale=100.0)

``vision`` is a dict whose ``kind`` (default ``vit``) selects the image encoder; its other keys
(defaults in brackets):

* ``kind: vit``: ``image_size`` [224], ``patch_size`` [32], ``width`` [768], ``layers`` [12],
  ``heads`` [12], ``mlp_ratio`` [4.0], and any other keyword argument of
  :class:`~glimpse.models.vit.VisionTransformer` (``stem: conv``, ``drop_path_rate``, ...).
  None means this ViT-B/32.
* ``kind: modified_resnet``: ``layers`` [(3, 4, 6, 3)], ``width`` [64], ``heads`` [32],
  ``image_size`` [224].
* ``kind: resnet``: ``arch`` [resnet18] (any torchvision ResNet), ``small_images`` [False]
  (the 3x3 stride-1 stem for 32-64 px images), ``pool`` [mean] (``mean`` or ``attention``),
  and for attention pooling ``heads`` [8] and ``image_size`` [224].

``quick_gelu`` uses ``x * sigmoid(1.702 x)`` in both Transformers (OpenAI's released weights
need it). ``pad_id`` is the padding id: the end token is taken as the last non-padding token
of each row, which is CLIP's ``argmax`` of the ids for CLIP's tokenizer (whose end token has
the largest id) and the end token for any tokenizer that pads with ``pad_id`` after it.

API (as open_clip's ``CLIP``): ``encode_image(images, normalize=False) -> (B, E)``,
``encode_text(tokens, normalize=False) -> (B, E)``, ``forward(images, tokens) ->
(image_emb (B, E), text_emb (B, E), scale ())`` with both embeddings L2-normalised and
``scale = min(exp(logit_scale), max_logit_scale)``. The trainer should call
:meth:`CLIP.clamp_logit_scale_` after every optimizer step (as OpenAI and open_clip do), so
that the parameter itself never leaves ``[0, log max_logit_scale]``. Attributes:
``embed_dim``, ``vocab_size``, ``context_length``, ``image_size`` (the size the image
encoder's position tables are built for; None for a mean-pooled ResNet, which takes any size).

Presets: :func:`clip_cpu` (small, for CPU runs), :func:`clip_vit_b32` and :func:`clip_rn50`
(the paper's shapes, embedding 512 and 1024). open_clip checkpoints convert with
:mod:`glimpse.models.convert.open_clip`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.captioning import CaptionEncoder
from glimpse.models.clip_resnet import AttentionPool2d, ModifiedResNet
from glimpse.models.layers import QuickGELU, as_pair
from glimpse.models.vit import Block, VisionTransformer

#: The image encoders, by ``vision["kind"]``.
VISION_KINDS = ("vit", "modified_resnet", "resnet")
#: CLIP's initial temperature, ``logit_scale = log(1 / 0.07)``.
INIT_LOGIT_SCALE = math.log(1 / 0.07)


class ViTImageEncoder(nn.Module):
    """CLIP's ViT image encoder, ``(B, 3, H, W) -> (B, E)``: a
    :class:`~glimpse.models.vit.VisionTransformer` with ``pre_norm``, no patch bias and
    LayerNorm eps 1e-5 (``trunk``, no head), then ``proj``, a Linear ``D -> E`` without bias,
    on the final LayerNorm of the class token."""

    def __init__(
        self,
        embed_dim: int,
        image_size: int | Sequence[int] = 224,
        patch_size: int = 32,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        quick_gelu: bool = False,
        **vit_options: Any,
    ) -> None:
        super().__init__()
        self.image_size = as_pair(image_size)
        self.trunk = VisionTransformer(
            img_size=self.image_size,
            patch_size=patch_size,
            num_classes=0,
            embed_dim=width,
            depth=layers,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            pre_norm=True,
            patch_bias=False,
            act_layer="quick_gelu" if quick_gelu else "gelu",
            norm_eps=1e-5,
            **vit_options,
        )
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=width**-0.5)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(self.trunk(images))


class ResNetImageEncoder(nn.Module):
    """A torchvision ResNet trunk (``conv1 .. layer4`` of
    :class:`~glimpse.models.captioning.CaptionEncoder`, torchvision's tensor names) pooled to
    ``(B, E)``: ``pool="mean"`` averages the final map and projects it with ``proj`` (Linear,
    no bias); ``pool="attention"`` uses CLIP's :class:`AttentionPool2d`, whose output
    projection maps to ``E``.

    ``load_imagenet_state`` (of the trunk) loads torchvision's ImageNet weights into it.
    """

    def __init__(
        self,
        embed_dim: int,
        arch: str = "resnet18",
        small_images: bool = False,
        pool: str = "mean",
        heads: int = 8,
        image_size: int | Sequence[int] = 224,
    ) -> None:
        super().__init__()
        if pool not in ("mean", "attention"):
            raise ValueError(f"model.net.vision.pool={pool!r} is not mean or attention.")
        self.trunk = CaptionEncoder(arch, small_images=small_images)
        width = self.trunk.out_dim
        self.pool = pool
        self.image_size = as_pair(image_size) if pool == "attention" else None
        self.proj: nn.Module
        if pool == "attention":
            grid = self.trunk.grid_shape(self.image_size)
            self.proj = AttentionPool2d(grid, width, heads, embed_dim)
        else:
            self.proj = nn.Linear(width, embed_dim, bias=False)
            nn.init.normal_(self.proj.weight, std=width**-0.5)

    def forward(self, images: Tensor) -> Tensor:
        grid = self.trunk(images)
        if self.pool == "mean":
            return self.proj(grid.mean(dim=1))
        height, width = self.trunk.grid_shape(images.shape[-2:])
        return self.proj(grid.transpose(1, 2).reshape(len(grid), -1, height, width))


def build_image_encoder(vision: Mapping[str, Any], embed_dim: int, quick_gelu: bool) -> nn.Module:
    """The image encoder ``(B, 3, H, W) -> (B, embed_dim)`` that ``vision`` describes (see the
    module docstring for its keys; without ``kind``, a ViT)."""
    options = dict(vision)
    kind = options.pop("kind", "vit")
    if kind == "vit":
        return ViTImageEncoder(embed_dim, quick_gelu=quick_gelu, **options)
    if kind == "modified_resnet":
        if "layers" in options:
            options["layers"] = tuple(options["layers"])
        return ModifiedResNet(output_dim=embed_dim, **options)
    if kind == "resnet":
        return ResNetImageEncoder(embed_dim, **options)
    raise ValueError(f"model.net.vision.kind={kind!r} is not one of {', '.join(VISION_KINDS)}.")


class TextTransformer(nn.Module):
    """CLIP's text encoder, ``tokens (B, L) -> (B, E)``, ``L <= context_length``.

    ``x_0 = token_embedding(tokens) + positional_embedding[:L]``, ``layers`` pre-norm blocks
    (:class:`~glimpse.models.vit.Block`, causal: token ``t`` sees tokens ``0..t``), the final
    LayerNorm ``ln_final``, the features at each row's end token (its last token that is not
    ``pad_id``), and ``proj``, a Linear ``width -> E`` without bias. Initialised as OpenAI's
    CLIP: embeddings N(0, 0.02) and N(0, 0.01), attention and MLP weights with standard
    deviations ``width^-1/2``, ``(2 width)^-1/2`` and ``width^-1/2 (2 layers)^-1/2`` for the
    output projections.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        mlp_ratio: float = 4.0,
        quick_gelu: bool = False,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        act = QuickGELU if quick_gelu else nn.GELU
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, causal=True, act_layer=act, norm_eps=1e-5)
            for _ in range(layers)
        )
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Linear(width, output_dim, bias=False)
        self._init_weights(width, layers)

    def _init_weights(self, width: int, layers: int) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        out_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.blocks:
            for linear, std in (
                (block.attn.qkv, width**-0.5),
                (block.attn.proj, out_std),
                (block.mlp.fc1, (2 * width) ** -0.5),
                (block.mlp.fc2, out_std),
            ):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)
        nn.init.normal_(self.proj.weight, std=width**-0.5)

    def no_weight_decay(self) -> set[str]:
        """The token and position embeddings."""
        return {"token_embedding.weight", "positional_embedding"}

    def end_positions(self, tokens: Tensor) -> Tensor:
        """``tokens (B, L) -> (B,)``: the index of each row's last token that is not
        ``pad_id`` (the end token; ``L - 1`` for a row of padding only)."""
        length = tokens.shape[1]
        return length - 1 - (tokens != self.pad_id).flip(1).int().argmax(dim=1)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(
                f"Expected tokens (B, L) with L <= context_length={self.context_length}, got "
                f"shape {tuple(tokens.shape)}; encode the texts with that context length."
            )
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        for block in self.blocks:
            x, _ = block(x)
        x = self.ln_final(x)
        return self.proj(x[torch.arange(len(x), device=x.device), self.end_positions(tokens)])


class CLIP(nn.Module):
    """CLIP's two encoders and temperature; see the module docstring for the arguments.

    Submodules: ``visual`` (the image encoder), ``text`` (:class:`TextTransformer`) and the
    scalar parameter ``logit_scale``.
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        context_length: int = 77,
        embed_dim: int = 512,
        vision: Mapping[str, Any] | None = None,
        text_width: int = 512,
        text_layers: int = 12,
        text_heads: int = 8,
        text_mlp_ratio: float = 4.0,
        quick_gelu: bool = False,
        pad_id: int = 0,
        init_logit_scale: float = INIT_LOGIT_SCALE,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if max_logit_scale < 1 or not 0 <= init_logit_scale <= math.log(max_logit_scale):
            raise ValueError(
                f"init_logit_scale={init_logit_scale} must lie in [0, log(max_logit_scale="
                f"{max_logit_scale})]."
            )
        self.embed_dim = embed_dim
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.max_logit_scale = max_logit_scale
        self.visual = build_image_encoder(vision or {}, embed_dim, quick_gelu)
        self.image_size: tuple[int, int] | None = getattr(self.visual, "image_size", None)
        self.text = TextTransformer(
            vocab_size,
            context_length,
            text_width,
            text_layers,
            text_heads,
            embed_dim,
            text_mlp_ratio,
            quick_gelu,
            pad_id,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """``images (B, 3, H, W) -> (B, E)``, L2-normalised with ``normalize``."""
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        """``tokens (B, L) -> (B, E)``, L2-normalised with ``normalize``."""
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> Tensor:
        """``min(exp(logit_scale), max_logit_scale)``, a scalar (no gradient above the cap)."""
        return self.logit_scale.clamp(max=math.log(self.max_logit_scale)).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter ``logit_scale`` into ``[0, log max_logit_scale]`` in place; call
        after each optimizer step (OpenAI's and open_clip's training loops do)."""
        self.logit_scale.clamp_(0, math.log(self.max_logit_scale))

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(images (B, 3, H, W), tokens (B', L)) -> (image_emb (B, E), text_emb (B', E),
        scale ())``, the embeddings L2-normalised, ``scale`` as :meth:`scale`."""
        return (
            self.encode_image(images, normalize=True),
            self.encode_text(tokens, normalize=True),
            self.scale(),
        )


def _clip(defaults: dict[str, Any], kwargs: dict[str, Any]) -> CLIP:
    """``CLIP(**defaults)`` updated by ``kwargs``; a ``vision`` dict in ``kwargs`` updates the
    preset's keys, or replaces them all when it names another ``kind``."""
    vision = dict(defaults.pop("vision"))
    override = dict(kwargs.pop("vision", None) or {})
    if override.get("kind", vision["kind"]) != vision["kind"]:
        vision = override
    else:
        vision.update(override)
    return CLIP(**{**defaults, **kwargs}, vision=vision)


def clip_vit_b32(**kwargs: Any) -> CLIP:
    """CLIP ViT-B/32 (paper Table 19 / open_clip ``ViT-B-32``): E=512; image 224 px, P=32,
    width 768, 12 layers, 12 heads; text width 512, 12 layers, 8 heads, context 77, vocabulary
    49,408 (151.3M parameters)."""
    return _clip(
        dict(
            embed_dim=512,
            vision=dict(kind="vit", image_size=224, patch_size=32, width=768, layers=12, heads=12),
            text_width=512,
            text_layers=12,
            text_heads=8,
        ),
        kwargs,
    )


def clip_rn50(**kwargs: Any) -> CLIP:
    """CLIP RN50 (paper Table 18 / open_clip ``RN50``): E=1024; the modified ResNet-50 (stages
    3, 4, 6, 3, width 64, attention pool with 32 heads) at 224 px; text as ViT-B/32's (102.0M
    parameters)."""
    return _clip(
        dict(
            embed_dim=1024,
            vision=dict(
                kind="modified_resnet", image_size=224, layers=(3, 4, 6, 3), width=64, heads=32
            ),
            text_width=512,
            text_layers=12,
            text_heads=8,
        ),
        kwargs,
    )


def clip_cpu(**kwargs: Any) -> CLIP:
    """A CLIP small enough to train on a CPU: E=128; a ViT on 64 px images with 8 px patches
    through the convolutional stem (an 8x8 grid), width 128, 4 layers, 4 heads, MLP ratio 2;
    text width 128, 3 layers, 4 heads, MLP ratio 2."""
    return _clip(
        dict(
            embed_dim=128,
            vision=dict(
                kind="vit",
                image_size=64,
                patch_size=8,
                width=128,
                layers=4,
                heads=4,
                mlp_ratio=2.0,
                stem="conv",
            ),
            text_width=128,
            text_layers=3,
            text_heads=4,
            text_mlp_ratio=2.0,
        ),
        kwargs,
    )
