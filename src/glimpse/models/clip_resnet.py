"""CLIP's modified ResNet image encoder (Radford et al. 2021, sec. 2.4) and its attention
pooling.

The paper changes He et al.'s ResNet-50 in three ways, kept here:

* the ResNet-D stem (He et al. 2019, "Bag of Tricks"): three 3x3 convolutions (the first of
  stride 2; widths ``w/2, w/2, w``) with BatchNorm and ReLU, then a 2x2 average pool in place
  of the 7x7 convolution and the max-pool;
* anti-aliased downsampling (Zhang 2019, "rect-2" blur pooling): every stride-2 step is a 2x2
  average pool followed by a stride-1 convolution, in the bottleneck after its 3x3
  convolution and on the shortcut before its 1x1 projection;
* global average pooling replaced by attention pooling (:class:`AttentionPool2d`): one layer of
  multi-head QKV attention whose single query is the mean of the final map's positions, over
  the mean and every position, each with a learned position embedding added; its output
  projection maps to the joint embedding, so the encoder needs no other projection.

``(B, 3, H, W) -> (B, output_dim)``. Stages are as in ResNet-50's bottlenecks (1x1, 3x3, 1x1
convolutions, expansion 4, the last BatchNorm of each branch initialised to zero), so at 224
px the final map is 7x7 with ``32 w`` channels (2048 for RN50). Tensor names follow OpenAI's
and open_clip's ``ModifiedResNet`` except the shortcut (``downsample.conv``/``downsample.bn``
for their ``downsample.0``/``downsample.1``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.layers import as_pair, resize_position_embedding


class Bottleneck(nn.Module):
    """A bottleneck residual block with anti-aliased downsampling, ``(B, C_in, H, W) ->
    (B, 4 planes, H / stride, W / stride)``: ``relu(bn3(conv3(pool(branch))) + shortcut)``."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride > 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                OrderedDict(
                    pool=nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                    conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class AttentionPool2d(nn.Module):
    """Attention pooling of a feature map, ``(B, C, h, w) -> (B, output_dim)``.

    The ``h w`` positions and their mean form ``1 + h w`` tokens, to which the learned table
    ``positional_embedding (1 + h w, C)`` (mean first) is added; one multi-head attention
    layer (``num_heads`` heads, projections ``q_proj``, ``k_proj``, ``v_proj`` and the output
    ``c_proj``) then lets the mean token alone query all of them::

        out = c_proj(MHA(q = z_mean W_q, K = Z W_k, V = Z W_v))

    The table is built for a ``grid_size`` map; another map size resizes it bicubically on the
    fly (:func:`~glimpse.models.layers.resize_position_embedding`).
    """

    def __init__(
        self,
        grid_size: int | Sequence[int],
        embed_dim: int,
        num_heads: int,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"Width {embed_dim} is not divisible by heads={num_heads}.")
        self.grid_size = as_pair(grid_size)
        self.num_heads = num_heads
        num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
        self.positional_embedding = nn.Parameter(
            torch.randn(num_tokens, embed_dim) / embed_dim**0.5
        )
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        std = embed_dim**-0.5
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(linear.weight, std=std)

    def no_weight_decay(self) -> set[str]:
        """The position table, an embedding."""
        return {"positional_embedding"}

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        pos = resize_position_embedding(
            self.positional_embedding[None], self.grid_size, (height, width)
        )
        tokens = tokens + pos

        def heads(t: Tensor) -> Tensor:
            return t.reshape(batch, t.shape[1], self.num_heads, -1).transpose(1, 2)

        q = heads(self.q_proj(tokens[:, :1]))
        out = F.scaled_dot_product_attention(
            q, heads(self.k_proj(tokens)), heads(self.v_proj(tokens))
        )
        return self.c_proj(out.transpose(1, 2).reshape(batch, channels))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image encoder, ``(B, 3, H, W) -> (B, output_dim)``.

    Args:
        layers: bottleneck blocks per stage, ``(3, 4, 6, 3)`` for RN50.
        output_dim: the joint embedding width the attention pool projects to (1024 for RN50).
        heads: attention-pool heads (OpenAI: ``32 width / 64``, 32 for RN50).
        image_size: the image side the attention pool's position table is built for (a
            ``image_size / 32`` grid); other sizes are accepted (see :class:`AttentionPool2d`).
        width: ``w``, the first stage's bottleneck width (64 for RN50); the stem ends with
            ``w`` channels and the last stage with ``32 w``.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        output_dim: int = 1024,
        heads: int = 32,
        image_size: int | Sequence[int] = 224,
        width: int = 64,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"A modified ResNet has 4 stages, got layers={list(layers)}.")
        self.image_size = as_pair(image_size)
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        channels = width
        stages = []
        for index, blocks in enumerate(layers):
            planes = width * 2**index
            stage = [Bottleneck(channels, planes, stride=1 if index == 0 else 2)]
            channels = planes * Bottleneck.expansion
            stage += [Bottleneck(channels, planes) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        grid = (self.image_size[0] // 32, self.image_size[1] // 32)
        self.attnpool = AttentionPool2d(grid, channels, heads, output_dim)
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)

    def stem(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, w, H / 4, W / 4)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 32 w, H / 32, W / 32)``, the map before pooling."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.attnpool(self.forward_features(x))
