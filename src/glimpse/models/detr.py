"""DETR: DEtection TRansformer (Carion et al. 2020, "End-to-End Object Detection with
Transformers"), following the paper and the facebookresearch/detr code where it is silent.

``images (B, 3, H, W)`` with a padding ``mask (B, H, W)`` (True on padding) go through

1. a ResNet with frozen BatchNorm (:class:`Backbone`): ``f (B, C, h, w)``, ``h = ⌈H/32⌉``, and
   the mask downsampled to ``(B, h, w)``;
2. a 1x1 convolution ``z_0 = W f (B, d, h, w)`` and fixed sine positions ``p (B, d, h, w)``
   (:class:`PositionEmbeddingSine`);
3. a post-norm transformer encoder over the ``h·w`` tokens and a decoder over ``Q`` learned
   object queries ``q (Q, d)``; positions are added to the queries and keys of every
   attention at every layer, never to the values (paper sec. A.3, fig. 10);
4. per decoder layer ``l`` a class head ``softmax(W_c o_l)`` over ``C + 1`` classes (the last is
   "no object", ∅) and a 3-layer MLP box head ``b̂ = σ(MLP(o_l))`` giving normalised
   ``(cx, cy, w, h)``; the earlier layers' predictions are the auxiliary outputs (sec. 3.2).

Parameter names: the ResNet's are torchvision's under ``backbone.`` (the task gives them their
own learning rate); everything else (``input_proj``, ``transformer``, ``query_embed``,
``class_embed``, ``bbox_embed``) is the detector's.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import get_model, get_model_weights
from torchvision.ops.misc import FrozenBatchNorm2d

from glimpse.hub import torchvision_weights_state
from glimpse.models.resnet import load_trunk_state

TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
TRAINED_STAGES = ("layer2", "layer3", "layer4")


class DETROutput(NamedTuple):
    """DETR's predictions.

    logits: ``(B, Q, C + 1)`` class scores of the last decoder layer, the last is no-object.
    boxes: ``(B, Q, 4)`` normalised ``(cx, cy, w, h)`` in ``(0, 1)`` of the last layer.
    aux: ``(logits, boxes)`` of each earlier decoder layer, first layer first; empty when the
        model is built with ``aux_loss=False``.
    """

    logits: Tensor
    boxes: Tensor
    aux: list[tuple[Tensor, Tensor]]


class Backbone(nn.Module):
    """A torchvision ResNet trunk with frozen BatchNorm: ``(images, mask) -> (f, mask')``.

    Every BatchNorm is a :class:`torchvision.ops.misc.FrozenBatchNorm2d` (fixed statistics and
    affine parameters, held as buffers): detection batches of 2-4 images per GPU are too small
    for batch statistics. As in DETR, the stem and ``layer1`` are frozen and ``layer2..4`` are
    trained, unless ``train_backbone`` is False, which freezes everything.

    All of that presumes ImageNet weights: frozen statistics of a random network normalise
    nothing, and a random stem learns nothing frozen. ``from_scratch=True`` is for training
    without them: ordinary BatchNorm (batch statistics) and every stage trained.

    Args:
        arch: a torchvision ResNet name (``resnet18`` ... ``resnet152``, ``resnext50_32x4d``).
        train_backbone: train ``layer2..4`` (True) or freeze the whole trunk (False).
        from_scratch: BatchNorm with batch statistics and the whole trunk trained.

    Parameter names are torchvision's (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...),
    so :meth:`load_imagenet_state` takes a torchvision state dict.
    """

    def __init__(
        self, arch: str = "resnet50", train_backbone: bool = True, from_scratch: bool = False
    ) -> None:
        super().__init__()
        if not arch.startswith(("resnet", "resnext", "wide_resnet")):
            raise ValueError(
                f"model.backbone arch={arch!r} is not a torchvision ResNet; use resnet50, "
                "resnet18 or another ResNet-family name."
            )
        norm_layer = nn.BatchNorm2d if from_scratch else FrozenBatchNorm2d
        model = get_model(arch, weights=None, norm_layer=norm_layer)
        for name in TRUNK:
            setattr(self, name, getattr(model, name))
        self.arch = arch
        self.from_scratch = from_scratch
        self.num_channels: int = model.fc.in_features
        for name, parameter in self.named_parameters():
            trained = train_backbone and (from_scratch or name.startswith(TRAINED_STAGES))
            parameter.requires_grad_(trained)

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` -> ``layer4`` map ``(B, C, h, w)`` and
        the mask resized to ``(B, h, w)`` by nearest neighbour (True on padding)."""
        x = images
        for name in TRUNK:
            x = getattr(self, name)(x)
        small = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode="nearest")
        return x, small[:, 0].bool()

    def load_imagenet_state(self, state: dict[str, Tensor]) -> None:
        """Load a torchvision ResNet state dict of the same ``arch``; the classifier ``fc.*``
        and, for frozen BatchNorm (which lacks them), ``num_batches_tracked`` are dropped."""
        own = set(self.state_dict())
        load_trunk_state(
            self,
            state,
            lambda key: (
                key.startswith("fc.") or (key.endswith("num_batches_tracked") and key not in own)
            ),
            f"Backbone(arch={self.arch!r})",
        )


def imagenet_state(arch: str) -> dict[str, Tensor]:
    """torchvision's ``IMAGENET1K_V1`` weights of ``arch`` (the ones DETR started from),
    downloaded, or read from ``$TORCH_HOME/hub/checkpoints``, through torchvision."""
    return torchvision_weights_state(get_model_weights(arch)["IMAGENET1K_V1"])


class PositionEmbeddingSine(nn.Module):
    """DETR's fixed 2-D sine positions, counted over the valid (unpadded) pixels only.

    With ``ŷ, x̂`` the 1-based row and column of a cell among the valid cells of its column and
    row, normalised to ``(0, 2π]`` by the valid height/width (``+ 1e-6``), and ``F = d / 2``:

        ``PE(y)_{2i} = sin(ŷ / T^{2i/F})``,  ``PE(y)_{2i+1} = cos(ŷ / T^{2i/F})``,

    likewise for ``x̂``; the output is ``[PE(y); PE(x)]``, ``d`` channels. Padded cells get
    values too, but they are never attended to.

    Args:
        num_pos_feats: ``F``, half of ``d_model``.
        temperature: ``T``.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, mask: Tensor) -> Tensor:
        """``mask (B, h, w)`` bool, True on padding -> positions ``(B, 2F, h, w)`` float32."""
        valid = ~mask
        y_embed = valid.cumsum(1, dtype=torch.float32)
        x_embed = valid.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Multi-head attention ``softmax(Q K^T / sqrt(d_head)) V`` with a key padding mask, through
    :func:`torch.nn.functional.scaled_dot_product_attention`.

    Queries, keys and values are separate inputs (DETR adds positions to the first two only).
    The projections are laid out as torch.nn.MultiheadAttention's: ``in_proj`` stacks
    ``W_q; W_k; W_v`` as a ``(3d, d)`` matrix, ``out_proj`` is ``W_o``.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}.")
        self.nhead = nhead
        self.dropout = dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor, index: int) -> Tensor:
        """Project ``x (B, L, d)`` with the ``index``-th block of ``in_proj`` and split the
        heads: ``(B, heads, L, d_head)``."""
        d_model = x.shape[-1]
        rows = slice(index * d_model, (index + 1) * d_model)
        projected = F.linear(x, self.in_proj.weight[rows], self.in_proj.bias[rows])
        return projected.unflatten(-1, (self.nhead, -1)).transpose(1, 2)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """``query (B, Lq, d)``, ``key``/``value (B, Lk, d)``, ``key_padding_mask (B, Lk)``
        (True: ignore that key) -> ``(B, Lq, d)``."""
        q, k, v = self._heads(query, 0), self._heads(key, 1), self._heads(value, 2)
        allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """``Linear -> ReLU -> Dropout -> Linear``, ``(B, L, d) -> (B, L, d)``."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer, positions ``p`` added to the queries and keys:

    ``x = LN(x + Dropout(Attn(x + p, x + p, x)))``,  ``x = LN(x + Dropout(FFN(x)))``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, nhead, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Tensor) -> Tensor:
        """``src``, ``pos (B, N, d)``, ``padding_mask (B, N)`` -> ``(B, N, d)``."""
        qk = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, padding_mask)))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer over object queries ``t`` with query positions ``q`` and the
    encoder memory ``m`` with positions ``p``:

        ``t = LN(t + Dropout(Attn(t + q, t + q, t)))``                  (queries among themselves)
        ``t = LN(t + Dropout(Attn(t + q, m + p, m, padding_mask)))``    (queries read the image)
        ``t = LN(t + Dropout(FFN(t)))``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, nhead, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, nhead, dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor, padding_mask: Tensor
    ) -> Tensor:
        """``tgt``, ``query_pos (B, Q, d)``; ``memory``, ``pos (B, N, d)``, ``padding_mask
        (B, N)`` -> ``(B, Q, d)``."""
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)))
        read = self.cross_attn(tgt + query_pos, memory + pos, memory, padding_mask)
        tgt = self.norm2(tgt + self.dropout2(read))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Transformer(nn.Module):
    """DETR's encoder-decoder: the decoder starts from zeros, its query positions are the
    learned object queries, and a shared final LayerNorm is applied to every decoder layer's
    output (so each can feed the prediction heads).

    Weights with more than one dimension get Xavier-uniform initialisation, as in DETR.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, nhead, dim_feedforward, dropout)
            for _ in range(num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout)
            for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos: Tensor) -> Tensor:
        """``src``, ``pos (B, d, h, w)``, ``mask (B, h, w)``, ``query_embed (Q, d)`` ->
        normalised decoder outputs ``(L, B, Q, d)``, one per decoder layer."""
        memory = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        padding_mask = mask.flatten(1)
        for layer in self.encoder:
            memory = layer(memory, pos, padding_mask)
        query_pos = query_embed.unsqueeze(0).expand(memory.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder:
            tgt = layer(tgt, query_pos, memory, pos, padding_mask)
            outputs.append(self.decoder_norm(tgt))
        return torch.stack(outputs)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``(..., in) -> (..., out)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DETR(nn.Module):
    """The detector: ``(images (B, 3, H, W), mask (B, H, W)) -> DETROutput``.

    Args:
        num_classes: ``C`` object classes; the class head has ``C + 1`` outputs, the last being
            no-object.
        backbone: the CNN; None builds ``Backbone("resnet50")``.
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: the
            transformer (:class:`Transformer`).
        num_queries: ``Q``, the number of object queries, an upper bound on detections.
        aux_loss: return every earlier decoder layer's predictions in ``DETROutput.aux``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: Backbone | None = None,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        num_queries: int = 100,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model={d_model} must be even: half its channels encode y.")
        self.num_classes = num_classes
        self.aux_loss = aux_loss
        self.backbone = backbone if backbone is not None else Backbone()
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d_model, kernel_size=1)
        self.position = PositionEmbeddingSine(d_model // 2)
        self.transformer = Transformer(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout
        )
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, num_layers=3)

    def detect(self, features: Tensor, mask: Tensor) -> DETROutput:
        """Everything after the backbone: ``features (B, C_backbone, h, w)``, ``mask (B, h, w)``
        (True on padding) -> predictions."""
        pos = self.position(mask).to(features.dtype)
        hidden = self.transformer(self.input_proj(features), mask, self.query_embed.weight, pos)
        logits = self.class_embed(hidden)
        boxes = self.bbox_embed(hidden).sigmoid()
        aux = list(zip(logits[:-1], boxes[:-1], strict=True)) if self.aux_loss else []
        return DETROutput(logits[-1], boxes[-1], aux)

    def forward(self, images: Tensor, mask: Tensor) -> DETROutput:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` bool, True on padding -> predictions."""
        return self.detect(*self.backbone(images, mask))


def _backbone(
    arch: str, pretrained_backbone: bool, train_backbone: bool, from_scratch: bool
) -> Backbone:
    backbone = Backbone(arch, train_backbone=train_backbone, from_scratch=from_scratch)
    if pretrained_backbone:
        backbone.load_imagenet_state(imagenet_state(arch))
    return backbone


def detr_r50(
    num_classes: int,
    pretrained_backbone: bool = False,
    train_backbone: bool = True,
    from_scratch: bool = False,
    num_queries: int = 100,
    aux_loss: bool = True,
) -> DETR:
    """The paper's DETR: ResNet-50, d=256, 8 heads, 6 + 6 layers, FFN 2048, dropout 0.1, 100
    queries (41M parameters); ``pretrained_backbone`` loads torchvision's ImageNet weights,
    ``from_scratch`` builds a backbone to train without them (see :class:`Backbone`)."""
    return DETR(
        num_classes,
        _backbone("resnet50", pretrained_backbone, train_backbone, from_scratch),
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        num_queries=num_queries,
        aux_loss=aux_loss,
    )


def detr_small(
    num_classes: int,
    resnet_arch: str = "resnet18",
    pretrained_backbone: bool = False,
    train_backbone: bool = True,
    from_scratch: bool = False,
    num_queries: int = 30,
    aux_loss: bool = True,
) -> DETR:
    """A small DETR for CPU runs, tests and shape checks: a ResNet-18 backbone, d=128,
    4 heads, 2 + 2 layers, FFN 256, 30 queries."""
    return DETR(
        num_classes,
        _backbone(resnet_arch, pretrained_backbone, train_backbone, from_scratch),
        d_model=128,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=256,
        dropout=0.1,
        num_queries=num_queries,
        aux_loss=aux_loss,
    )
