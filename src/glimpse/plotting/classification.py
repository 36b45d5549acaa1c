"""Pictures of a classifier: the confusion matrix and attention-rollout maps over images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import pyplot as plt
from torch import Tensor
from torch.nn import functional as F

#: Above this many classes the confusion matrix has no per-cell counts or tick labels.
MAX_ANNOTATED_CLASSES = 20


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str], title: str):
    """A matplotlib figure of a confusion matrix ``(C, C)`` (rows true classes, columns
    predictions): each row coloured by its share of the true class (the recall on the
    diagonal), with the counts written in the cells when there are few classes."""
    counts = matrix.cpu().numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(class_names)
    side = min(max(4.0, 0.45 * size + 2.5), 16.0)
    figure, axes = plt.subplots(figsize=(side, side), layout="constrained")
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if size <= MAX_ANNOTATED_CLASSES:
        axes.set_xticks(range(size), class_names, rotation=60, ha="right")
        axes.set_yticks(range(size), class_names)
        for row in range(size):
            for column in range(size):
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(
                    column,
                    row,
                    int(counts[row, column]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=8,
                )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return figure


def rollout_figure(pixels: np.ndarray, maps: Tensor, titles: Sequence[str], columns: int = 4):
    """Images ``(B, H, W, 3)`` with their rollout maps ``(B, h, w)`` laid over them (each map
    scaled to [0, 1] and resized bilinearly to the image), one panel per image."""
    count = len(pixels)
    rows = -(-count // columns)
    height, width = pixels.shape[1:3]
    upsampled = F.interpolate(maps[:, None].float().cpu(), size=(height, width), mode="bilinear")
    upsampled = upsampled[:, 0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    heat = ((upsampled - low) / (high - low).clamp_min(1e-12)).numpy()
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.8 * rows), layout="constrained", squeeze=False
    )
    for index, panel in enumerate(axes.flat):
        panel.axis("off")
        if index < count:
            panel.imshow(pixels[index])
            panel.imshow(heat[index], cmap="jet", alpha=0.45)
            panel.set_title(titles[index], fontsize=8)
    return figure
