"""Detection transforms that keep boxes consistent with their image, and batch padding.

The pipelines are torchvision.transforms.v2 ones applied to ``(image, target)`` pairs, where
the image is a :class:`~torchvision.tv_tensors.Image` and the target a dict of ``boxes`` (a
:class:`~torchvision.tv_tensors.BoundingBoxes` in absolute ``xyxy`` pixels) and ``labels``:
every geometric step moves, scales or clips the boxes with the pixels. They follow DETR's
(Carion et al. 2020, Sec. 4 and facebookresearch/detr ``datasets/coco.py``):

* training: horizontal flip; then, with probability ``random_crop``, a resize of the shorter
  side to one of :data:`CROP_PRE_SCALES` and a crop of random height and width in
  :data:`CROP_SIZE` px; then the multi-scale resize (shorter side drawn from ``scales``,
  longer side at most ``max_size``); boxes a crop left empty (or under :data:`MIN_BOX_PX`
  wide or high) are removed with their labels;
* evaluation: the shorter side resized to ``scale``, the longer at most ``max_size``.

Both end with scaling to [0, 1] and normalisation. :func:`to_target` then turns the boxes into
the normalised ``(cx, cy, w, h)`` of the transformed image, and :func:`collate_detection`
pads a batch and marks the padding in a mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from glimpse.batches import DetectionBatch, DetectionTarget
from glimpse.errors import ConfigError

#: DETR's training scales: the shorter side is drawn from 480, 512, ..., 800 px.
DETR_SCALES = tuple(range(480, 801, 32))
#: The shorter sides an image is resized to before DETR's random crop.
CROP_PRE_SCALES = (400, 500, 600)
#: The range of the random crop's height and width, in px.
CROP_SIZE = (384, 600)
#: Training drops boxes narrower or lower than this (in px) after the crop and resize, with
#: their labels: the least torchvision's SanitizeBoundingBoxes accepts (DETR keeps any box of
#: positive size; a box under a pixel wide is no object one can see).
MIN_BOX_PX = 1.0


class RandomSizeCrop(v2.Transform):
    """Crop a random region whose height and width are drawn uniformly from
    ``[min_size, min(image side, max_size)]`` (DETR's ``RandomSizeCrop``); boxes are clipped
    to it. A side shorter than ``min_size`` is kept whole."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"The crop sizes {min_size}..{max_size} must satisfy 0 < min <= max.")
        self.min_size, self.max_size = min_size, max_size

    def _side(self, length: int) -> int:
        high = min(length, self.max_size)
        low = min(self.min_size, high)
        return int(torch.randint(low, high + 1, ()))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = self._side(height), self._side(width)
        top = int(torch.randint(0, height - crop_h + 1, ()))
        left = int(torch.randint(0, width - crop_w + 1, ()))
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(
    scales: Sequence[int],
    max_size: int,
    random_crop: float,
    hflip: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Compose:
    """DETR's training augmentation (see the module docstring) for ``(image, target)``.

    ``random_crop`` is the probability of the crop branch (0.5 in DETR; 0 disables it).
    """
    if not scales or min(scales) < 1:
        raise ConfigError(f"data.train_scales={list(scales)} must be positive sizes in px.")
    if not 0 <= random_crop <= 1:
        raise ConfigError(f"data.random_crop={random_crop} must be a probability in [0, 1].")
    resize = v2.RandomShortestSize(list(scales), max_size=max_size, antialias=True)
    steps: list[v2.Transform] = [v2.ToImage()]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if random_crop > 0:
        cropped = v2.Compose(
            [
                v2.RandomShortestSize(list(CROP_PRE_SCALES), antialias=True),
                RandomSizeCrop(*CROP_SIZE),
                resize,
            ]
        )
        steps.append(v2.RandomChoice([resize, cropped], p=[1 - random_crop, random_crop]))
    else:
        steps.append(resize)
    steps.append(v2.SanitizeBoundingBoxes(min_size=MIN_BOX_PX, min_area=MIN_BOX_PX**2))
    return v2.Compose(steps + _normalise(mean, std))


def eval_transform(
    scale: int, max_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """The shorter side resized to ``scale`` px unless the longer would exceed ``max_size``
    (it is then ``max_size``), then normalisation."""
    if scale < max_size:
        resize = v2.Resize(scale, max_size=max_size, antialias=True)
    else:  # the longer side reaches max_size first: torchvision's Resize then takes size None
        resize = v2.Resize(None, max_size=max_size, antialias=True)
    return v2.Compose([v2.ToImage(), resize, *_normalise(mean, std)])


def to_target(boxes: tv_tensors.BoundingBoxes, labels: Tensor) -> DetectionTarget:
    """Absolute boxes of a transformed image -> :class:`DetectionTarget` with ``(cx, cy, w, h)``
    divided by the image's width and height."""
    height, width = boxes.canvas_size
    cxcywh = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return DetectionTarget(cxcywh.as_subclass(Tensor).float() / scale, labels.long())


class DetectionSample(NamedTuple):
    """One dataset item: the transformed image ``(3, h, w)``, its target, the dataset's id of
    the image and its ``(h, w)`` on disk."""

    image: Tensor
    target: DetectionTarget
    image_id: int
    orig_size: tuple[int, int]


def collate_detection(samples: Sequence[DetectionSample]) -> DetectionBatch:
    """Pad the images with zeros at the bottom and right to the batch's largest height and
    width; the mask is True on the padding."""
    sizes = torch.tensor([s.image.shape[-2:] for s in samples], dtype=torch.long)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    images = torch.zeros(len(samples), 3, height, width, dtype=samples[0].image.dtype)
    mask = torch.ones(len(samples), height, width, dtype=torch.bool)
    for i, sample in enumerate(samples):
        h, w = sample.image.shape[-2:]
        images[i, :, :h, :w] = sample.image
        mask[i, :h, :w] = False
    return DetectionBatch(
        images=images,
        mask=mask,
        targets=tuple(s.target for s in samples),
        image_ids=torch.tensor([s.image_id for s in samples], dtype=torch.long),
        sizes=sizes,
        orig_sizes=torch.tensor([s.orig_size for s in samples], dtype=torch.long),
    )
