"""ImageNet-1k's class order: the 1,000 ILSVRC-2012 WordNet ids (wnids), sorted.

A model trained on ImageNet-1k (torchvision's ``IMAGENET1K_*`` weights, timm's) predicts class
``i`` = the ``i``-th wnid in sorted order (``imagenet1k_wnids.txt`` beside this file). A dataset
whose class folders are wnids (Imagenette, Imagewoof, ImageNet-100, any wnid-named ImageFolder)
therefore knows which of such a model's outputs are its classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files

IMAGENET1K_CLASSES = 1000


@cache
def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1,000 wnids in ImageNet-1k's class order (``n01440764`` is class 0, tench)."""
    text = files("glimpse.data.images").joinpath("imagenet1k_wnids.txt").read_text(encoding="ascii")
    return tuple(text.split())


def imagenet1k_indices(wnids: Sequence[str]) -> list[int] | None:
    """ImageNet-1k's class index of each of ``wnids``, in order; None when any is not one of
    ImageNet-1k's classes (a folder named otherwise, an ImageNet-21k wnid)."""
    order = {wnid: index for index, wnid in enumerate(imagenet1k_wnids())}
    if not wnids or any(wnid not in order for wnid in wnids):
        return None
    return [order[wnid] for wnid in wnids]
