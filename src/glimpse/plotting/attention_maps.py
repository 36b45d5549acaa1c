"""DINO's self-attention maps drawn over their images: the mean over heads laid over the
image, then each head alone (Caron et al. 2021, fig. 1 and 3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F

#: Heads drawn at most; a wider model's first heads are shown.
MAX_HEADS = 8


def attention_map_figure(pixels: np.ndarray, maps: Tensor, titles: Sequence[str] | None = None):
    """One row per image: the image ``(H, W, 3)`` in [0, 1], the mean of its heads' maps laid
    over it, then each head's map alone (up to :data:`MAX_HEADS`), every map scaled to [0, 1]
    and enlarged to the image with nearest-neighbour sampling (one block per patch).

    ``pixels (B, H, W, 3)``, ``maps (B, heads, h, w)``; ``titles`` one per image."""
    count, heads = maps.shape[0], min(maps.shape[1], MAX_HEADS)
    height, width = pixels.shape[1:3]
    shown = torch.cat([maps.float().mean(dim=1, keepdim=True), maps[:, :heads].float()], dim=1)
    large = F.interpolate(shown.cpu(), size=(height, width), mode="nearest")
    low = large.amin(dim=(2, 3), keepdim=True)
    high = large.amax(dim=(2, 3), keepdim=True)
    scaled = ((large - low) / (high - low).clamp_min(1e-12)).numpy()
    columns = heads + 2
    figure, axes = plt.subplots(
        count,
        columns,
        figsize=(1.7 * columns, 1.8 * count),
        layout="constrained",
        squeeze=False,
    )
    for row in range(count):
        axes[row, 0].imshow(pixels[row])
        axes[row, 0].set_title(titles[row] if titles else "image", fontsize=7)
        axes[row, 1].imshow(pixels[row])
        axes[row, 1].imshow(scaled[row, 0], cmap="inferno", alpha=0.6)
        axes[row, 1].set_title("mean of heads", fontsize=7)
        for head in range(heads):
            axes[row, head + 2].imshow(scaled[row, head + 1], cmap="inferno")
            axes[row, head + 2].set_title(f"head {head}", fontsize=7)
        for panel in axes[row]:
            panel.axis("off")
    return figure
