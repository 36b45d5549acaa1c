"""Pictures of a captioner: images with their generated and reference captions, and where
the model looked for each word (Xu et al., "Show, Attend and Tell", ICML 2015, figures 2 and 3).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor
from torch.nn import functional as F

#: Reference captions written under each image of the caption grid.
REFERENCES_SHOWN = 2


#: Characters per line of the captions under the images.
TEXT_WIDTH = 38


def _caption_text(generated: str, references: Sequence[str]) -> str:
    lines = textwrap.wrap(f"generated: {generated}", TEXT_WIDTH)
    for reference in references[:REFERENCES_SHOWN]:
        lines += textwrap.wrap(f"reference: {reference}", TEXT_WIDTH)
    return "\n".join(lines)


def caption_grid_figure(
    pixels: np.ndarray,
    generated: Sequence[str],
    references: Sequence[Sequence[str]],
    columns: int = 4,
) -> Figure:
    """Images ``(B, H, W, 3)`` in [0, 1], one panel each, with the generated caption and the
    first :data:`REFERENCES_SHOWN` references written under the image."""
    count = len(pixels)
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = plt.figure(figsize=(3.2 * columns, 4.4 * rows), layout="constrained")
    for index in range(count):
        panel = figure.add_subplot(rows, columns, index + 1)
        panel.imshow(pixels[index])
        panel.set_xticks([])
        panel.set_yticks([])
        panel.spines[:].set_visible(False)
        panel.set_xlabel(_caption_text(generated[index], references[index]), fontsize=8, loc="left")
    return figure


def attention_figure(pixels: np.ndarray, words: Sequence[str], maps: Tensor) -> Figure:
    """The image ``(H, W, 3)`` in [0, 1], then one panel per word: the image lit by the
    attention map ``(L, h, w)`` of that word, resized bilinearly to ``(H, W)`` and scaled to
    [0, 1] (``pixels * (0.2 + 0.8 * map)``: bright where the model looked)."""
    maps = torch.as_tensor(maps).float().cpu()
    if len(maps) != len(words):
        raise ValueError(
            f"attention_figure got {len(words)} words but {len(maps)} attention maps; "
            "pass one map per word."
        )
    height, width = pixels.shape[:2]
    heat = np.zeros((0, height, width))
    if len(words):
        upsampled = F.interpolate(maps[:, None], size=(height, width), mode="bilinear")[:, 0]
        low = upsampled.amin(dim=(1, 2), keepdim=True)
        high = upsampled.amax(dim=(1, 2), keepdim=True)
        heat = ((upsampled - low) / (high - low).clamp_min(1e-12)).numpy()
    count = len(words) + 1
    columns = min(count, 5)
    rows = -(-count // columns)
    figure = plt.figure(figsize=(2.4 * columns, 2.6 * rows), layout="constrained")
    panel = figure.add_subplot(rows, columns, 1)
    panel.imshow(pixels)
    panel.set_title("image", fontsize=10)
    panel.axis("off")
    for index, word in enumerate(words):
        panel = figure.add_subplot(rows, columns, index + 2)
        panel.imshow(pixels * (0.2 + 0.8 * heat[index][..., None]))
        panel.set_title(word, fontsize=10)
        panel.axis("off")
    return figure
