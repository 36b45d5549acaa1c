"""Pictures of a detector: predicted boxes (solid, with class and score) and ground-truth
boxes (dashed) over an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import patches
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor


def draw_detections(
    axes: Any,
    pixels: np.ndarray,
    boxes: Tensor,
    names: Sequence[str],
    scores: Tensor,
    truth: Tensor | None = None,
    truth_names: Sequence[str] = (),
) -> None:
    """Draw ``pixels (H, W, 3)`` in [0, 1] on ``axes`` with predicted ``boxes (n, 4)`` (absolute
    xyxy) labelled by class name and score, and ground-truth ``truth (m, 4)`` dashed."""
    axes.imshow(pixels)
    axes.set_axis_off()
    colours = plt.get_cmap("tab10")
    for index, ((x0, y0, x1, y1), name, score) in enumerate(
        zip(boxes.tolist(), names, scores.tolist(), strict=True)
    ):
        colour = colours(index % 10)
        axes.add_patch(
            patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.5)
        )
        axes.text(
            x0,
            y0,
            f"{name} {score:.2f}",
            fontsize=7,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
        )
    if truth is not None:
        for (x0, y0, x1, y1), name in zip(truth.tolist(), truth_names, strict=True):
            axes.add_patch(
                patches.Rectangle(
                    (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", lw=1.0, ls="--"
                )
            )
            axes.text(x0, y1, name, fontsize=6, color="white", va="top")


def detection_figure(
    pixels: np.ndarray, boxes: Tensor, names: Sequence[str], scores: Tensor, title: str = ""
) -> Figure:
    """One image ``(H, W, 3)`` in [0, 1] with its detections (absolute xyxy ``boxes (n, 4)``)."""
    height, width = pixels.shape[:2]
    scale = 8.0 / max(height, width)
    figure, axes = plt.subplots(figsize=(width * scale, height * scale), layout="constrained")
    draw_detections(axes, pixels, boxes, names, scores)
    if title:
        axes.set_title(title, fontsize=9)
    return figure
