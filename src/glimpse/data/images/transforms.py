"""The torchvision.transforms.v2 pipelines of labelled images, built from plain arguments (so
from config): training augmentation and the evaluation resize and centre crop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchvision.transforms import v2

from glimpse.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(
    image_size: int,
    scale: Sequence[float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: Literal["trivialaugment", "randaugment"] | None = None,
    randaugment_num_ops: int = 2,
    randaugment_magnitude: int = 9,
    random_erasing: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> ``(3, image_size, image_size)`` float32 tensor, normalised.

    RandomResizedCrop to ``image_size`` over ``scale`` of the area (aspect ratio 3/4 to 4/3),
    horizontal flip with probability ``hflip``, optionally TrivialAugmentWide (Müller & Hutter
    2021) or RandAugment (Cubuk et al. 2020), then scaling to [0, 1], normalisation, and
    RandomErasing (Zhong et al. 2020) with probability ``random_erasing``. The image becomes a
    uint8 tensor first, so the geometric and colour operations run on tensors (torchvision's
    advice for v2 transforms).
    """
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif auto_augment == "randaugment":
        steps.append(v2.RandAugment(randaugment_num_ops, randaugment_magnitude))
    elif auto_augment is not None:
        raise ConfigError(
            f"Unknown data.auto_augment={auto_augment!r}; use trivialaugment, randaugment or null."
        )
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(random_erasing))
    return v2.Compose(steps)


def eval_transform(
    image_size: int,
    crop_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> ``(3, image_size, image_size)`` float32 tensor, normalised: the shorter
    side resized to ``int(image_size / crop_ratio)``, then the centre ``image_size`` square
    (224 from 256 with the usual ``crop_ratio`` 0.875)."""
    if not 0 < crop_ratio <= 1:
        raise ConfigError(f"data.crop_ratio={crop_ratio} must be in (0, 1].")
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(int(image_size / crop_ratio), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
