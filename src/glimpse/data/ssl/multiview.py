"""Multi-view image datamodules for self-supervised learning (BYOL, DINO).

:class:`MultiViewDataModule` wraps any labelled image datamodule of
:mod:`glimpse.data.images.image_folder` (shapes, Imagenette/Imagewoof, an ImageFolder, an ImageNet
subset): the ``base`` downloads, verifies and indexes the images and names the classes; this module
reads them through other transforms.

* Training batches are :class:`~glimpse.batches.MultiViewImages`: the random views of
  :mod:`glimpse.data.ssl.views` (BYOL's two asymmetric views or DINO's multi-crop) of the train
  split, shuffled, the last partial batch dropped. Their labels only feed an online probe.
* Validation and testing return two loaders of :class:`~glimpse.batches.LabelledImages`
  with the base's evaluation transform (resize, centre crop, no augmentation): index 0 is the
  labelled train split (the kNN classifier's memory bank and the probe's training features),
  index 1 the val split (testing: the test split, which is val when there is none).
* :func:`labelled_loader` gives such an unaugmented loader of any split for the base or any
  labelled image datamodule, for offline evaluation (``eval=knn``, ``eval=linear``).

The global views' side is the base's ``image_size``, which is also the evaluation size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from glimpse.batches import MULTI_VIEW_IMAGES, MultiViewImages
from glimpse.data.base import SPLITS, GlimpseDataModule
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.image_folder import (
    ClassFolder,
    ImageFolderDataModule,
    collate_labelled_images,
)
from glimpse.data.spec import DataSpec
from glimpse.data.ssl.views import MultiViewTransform, ViewRecipe
from glimpse.errors import ConfigError

log = logging.getLogger(__name__)

#: The splits each Lightning stage reads: the labelled train split is the memory bank of every
#: evaluation.
STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("train", "val"),
    "test": ("train", "test"),
}


class TransformedImages(Dataset):
    """The images of a :class:`~glimpse.data.images.image_folder.ClassFolder` (already indexed and
    verified) decoded by :func:`~glimpse.data.images.decode.open_rgb` and passed through
    ``transform``: samples are ``(transform(image), label)``."""

    def __init__(self, folder: ClassFolder, transform: Callable) -> None:
        self.samples = list(folder.samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[object, int]:
        path, label = self.samples[index]
        return self.transform(open_rgb(path)), label


def collate_multi_view(samples: Sequence[tuple[Sequence[torch.Tensor], int]]) -> MultiViewImages:
    """Stack ``(views, label)`` samples, ``views`` a tuple of ``V`` ``(3, S_v, S_v)`` tensors,
    into a :class:`MultiViewImages` of ``V`` ``(B, 3, S_v, S_v)`` tensors and ``(B,)`` labels."""
    views = tuple(torch.stack(view) for view in zip(*(s[0] for s in samples), strict=True))
    labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return MultiViewImages(views, labels)


def labelled_loader(
    datamodule: ImageFolderDataModule | MultiViewDataModule,
    split: str,
    batch_size: int | None = None,
    num_workers: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """``split`` (train, val or test) of a set-up labelled image datamodule, or of a
    :class:`MultiViewDataModule`'s base, as :class:`LabelledImages` batches with the evaluation
    transform, in file order: what features for a kNN classifier or a linear probe are
    extracted from. Images are decoded in the DataLoader workers whatever the datamodule's
    ``decode_device``. ``batch_size`` and ``num_workers`` default to the datamodule's."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    if isinstance(datamodule, MultiViewDataModule):
        batch_size = batch_size or datamodule.batch_size
        num_workers = datamodule.num_workers if num_workers is None else num_workers
        datamodule = datamodule.base
    workers = datamodule.num_workers if num_workers is None else num_workers
    return DataLoader(
        TransformedImages(datamodule.dataset(split), datamodule.transforms["eval"]),
        batch_size=batch_size or datamodule.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_labelled_images,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


class MultiViewDataModule(GlimpseDataModule):
    """Random views of a labelled image datamodule's training images, and its labelled splits
    for evaluation (see the module docstring).

    Args:
        base: the labelled image datamodule (Hydra builds it from ``data.base``, composed from
            ``conf/data/<name>.yaml``); its ``image_size`` is the global views' side, its
            ``mean``/``std`` normalise every view. Its training-augmentation arguments are not
            used.
        views: the ``data.views`` mapping of :class:`~glimpse.data.ssl.views.ViewRecipe`:
            ``kind`` (byol | multicrop), ``global_scale``, ``num_local``, ``local_size``,
            ``local_scale``, ``blur_sigma``; None is BYOL's recipe.
        batch_size: images per batch (per device), each with all its views.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked batches; None pins them when training on a CUDA device.

    The spec is the base's with kind :data:`~glimpse.batches.MULTI_VIEW_IMAGES` and the
    resolved recipe (``ViewRecipe.describe``) under ``metadata["views"]``.
    """

    KIND = MULTI_VIEW_IMAGES

    def __init__(
        self,
        base: ImageFolderDataModule,
        views: Mapping | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not isinstance(base, ImageFolderDataModule):
            raise ConfigError(
                f"data.base is a {type(base).__name__}; multi-view data needs a labelled image "
                "datamodule (data.base composed from shapes, imagenette, imagewoof, imagefolder "
                "or imagenet_subset)."
            )
        if base.decode_device != "cpu":
            raise ConfigError(
                f"data.base.decode_device={base.decode_device} is not supported: multi-view "
                "crops are drawn in the DataLoader workers; set data.base.decode_device=cpu."
            )
        self.base = base
        self.recipe = ViewRecipe.from_config(views)
        self.transform = MultiViewTransform(self.recipe, base.image_size, base.mean, base.std)

    def prepare_data(self) -> None:
        """The base's: download, extract or generate the images."""
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set up the base for ``stage`` and index the splits this module reads for it."""
        self.base.setup(stage)
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self.base.dataset(split)
        if self._spec is None:
            base = self.base.spec
            self._spec = DataSpec(
                kind=MULTI_VIEW_IMAGES,
                class_names=base.class_names,
                image_size=base.image_size,
                mean=base.mean,
                std=base.std,
                metadata={
                    **base.metadata,
                    "base": f"{type(self.base).__module__}.{type(self.base).__qualname__}",
                    "views": self.recipe.describe(self.base.image_size),
                },
            )
            log.info("Views per image: %s", self._spec.metadata["views"]["sizes"])

    def labelled_datamodule(self) -> ImageFolderDataModule:
        """The base: the same images as a plain labelled image datamodule."""
        return self.base

    def split_loader(self, split: str) -> DataLoader | list[DataLoader]:
        """Training: the train split's views, shuffled, the last partial batch dropped when the
        split holds a whole one. Validation and testing: ``[train split (the memory bank), val or
        test split]``, unaugmented."""
        if split == "train":
            views = TransformedImages(self.base.dataset("train"), self.transform)
            return self.loader(views, True, collate_multi_view)
        return [self.eval_loader("train"), self.eval_loader(split)]

    def eval_loader(self, split: str) -> DataLoader:
        """``split`` as unaugmented :class:`LabelledImages` in file order (:func:`labelled_loader`
        with this module's batch size and workers)."""
        return labelled_loader(self, split, pin_memory=self.pin())
