"""Every picture glimpse draws, as matplotlib figures: what the callbacks log during training
and what ``eval.py`` saves for image files.

Drawing is off screen: matplotlib's file-only Agg backend is chosen here, before pyplot is
imported. One module per kind of picture: :mod:`.classification` (confusion matrix, attention
rollout), :mod:`.captions` (captions and per-word attention), :mod:`.detection` (boxes),
:mod:`.attention_maps` (DINO's class-token attention per head), :mod:`.curves` (metric curves
of several runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (creating its folder) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def unnormalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images ``(B, 3, H, W)`` -> RGB arrays ``(B, H, W, 3)`` in [0, 1]."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    pixels = (images.float().cpu() * std_t + mean_t).clamp(0, 1)
    return pixels.permute(0, 2, 3, 1).numpy()
