"""Frozen backbone features of a labelled image dataset, what ``eval=knn`` and ``eval=linear``
work on.

The data is any labelled image datamodule (``data=shapes``, ``data=imagenette``, an
ImageFolder) or a multi-view one (``data=ssl_*``, e.g. the checkpoint's own); its train and val
splits are read unaugmented (resize and centre crop, :func:`glimpse.data.ssl.multiview.
labelled_loader`) and each image goes through the task's ``image_features`` once, in
evaluation mode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from glimpse.data.ssl.multiview import labelled_loader


class SplitFeatures(NamedTuple):
    """Features ``(N, D)`` float32 and labels ``(N,)`` int64 of one split, on the CPU."""

    features: Tensor
    labels: Tensor


class LabelledFeatures(NamedTuple):
    """The train and val splits' features, and the data's class names."""

    train: SplitFeatures
    val: SplitFeatures
    class_names: tuple[str, ...]


def evaluation_device() -> torch.device:
    """A CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def extract_features(task: Any, loader: DataLoader, device: torch.device) -> SplitFeatures:
    """Every batch of ``loader`` (:class:`~glimpse.batches.LabelledImages`) through
    ``task.image_features`` in evaluation mode."""
    task.eval().to(device)
    features, labels = [], []
    for images, batch_labels in loader:
        features.append(task.image_features(images.to(device)).float().cpu())
        labels.append(batch_labels)
    return SplitFeatures(torch.cat(features), torch.cat(labels))


def labelled_features(task: Any, data_cfg: DictConfig | None, name: str) -> LabelledFeatures:
    """The train and val features of the data ``data_cfg`` describes, for ``eval=name``."""
    if not hasattr(task, "image_features"):
        raise ValueError(
            f"eval={name} needs a checkpoint of a task with image features (BYOL, DINO, CLIP); "
            f"{type(task).__name__} has none."
        )
    if not data_cfg:
        raise ValueError(f"eval={name} needs data: the checkpoint has no data config; pass data=.")
    datamodule = instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    device = evaluation_device()
    train = extract_features(task, labelled_loader(datamodule, "train"), device)
    val = extract_features(task, labelled_loader(datamodule, "val"), device)
    return LabelledFeatures(train, val, tuple(datamodule.spec.class_names))
