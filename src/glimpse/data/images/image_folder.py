"""Labelled images in ImageFolder layout (``root/<split>/<class>/<image>``) as LightningDataModules.

* :class:`ImageFolderDataModule` reads ``root/train`` and ``root/val`` (and ``root/test`` when
  present, else val again for testing) through :class:`torchvision.datasets.ImageFolder`.
* With ``decode_device="cuda"`` the workers only read JPEG files, and the batch is decoded and
  augmented on the GPU (:mod:`glimpse.data.images.device_decode`), one batch ahead of the
  training step under a trainer (:mod:`glimpse.data.prefetch`).
* Files are decoded by :func:`~glimpse.data.images.decode.open_rgb` and transformed by the
  pipelines of :mod:`glimpse.data.images.transforms`.

Corrupt files are found by a verification pass in :meth:`ImageFolderDataModule.setup`, not
when a batch is loaded: the error (or the count of skipped files, with ``skip_corrupt``)
then comes before training, once, from the main process; a split's length is fixed before
its sampler (and Lightning's distributed sampler) is built, so every epoch, every rank and
every batch has the size the config says, with no collate function that drops samples. The
pass decodes each image fully (a truncated JPEG is only noticed when its last bytes are
missing), in JPEG draft mode (DCT-domain downscaling, which still reads every byte) and on
``num_workers`` threads (Pillow releases the GIL while decoding). Datasets too large to
verify on every run can set ``verify=false``; a bad file then raises
:class:`~glimpse.data.images.decode.CorruptImageError` naming it when it is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate
from torchvision.datasets import ImageFolder

from glimpse.batches import LABELLED_IMAGES, LabelledImages
from glimpse.data.base import (
    SPLITS,
    STAGE_SPLITS,
    GlimpseDataModule,
    check_verification,
    normalisation,
)
from glimpse.data.images.decode import open_rgb, readable_images
from glimpse.data.images.device_decode import (
    EncodedImages,
    collate_encoded,
    decode_to_labelled_images,
    labels_to_device,
    read_encoded,
)
from glimpse.data.images.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)
from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)


def _transform_kind(split: str) -> str:
    return "train" if split == "train" else "eval"


def collate_labelled_images(samples: list[tuple[torch.Tensor, int]]) -> LabelledImages:
    """Stack ``(image (3, H, W), label)`` samples into a :class:`LabelledImages` batch."""
    images, labels = default_collate(samples)
    return LabelledImages(images, labels)


def class_folders(folder: Path) -> list[str]:
    """The class folder names under ``folder``, sorted; hidden folders (``.ipynb_checkpoints``
    and the like) are not classes."""
    if not folder.is_dir():
        raise MissingFileError(
            f"{folder} does not exist; data.root must hold train/ and val/ folders with one "
            "subfolder of images per class."
        )
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


class ClassFolder(ImageFolder):
    """:class:`~torchvision.datasets.ImageFolder` with its classes given, not found, so that
    every split uses the training split's label indices even when a class has no images in
    it. Samples are ``(transformed image, label)``."""

    def __init__(self, root: Path, classes: Sequence[str], **kwargs) -> None:
        self.fixed_classes = list(classes)
        super().__init__(str(root), **kwargs)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self.fixed_classes, {name: i for i, name in enumerate(self.fixed_classes)}

    def keep(self, samples: list[tuple[str, int]]) -> None:
        """Restrict the dataset to ``samples``."""
        self.samples = self.imgs = samples
        self.targets = [label for _, label in samples]


class ImageFolderDataModule(GlimpseDataModule):
    """Images in ``root/{train,val}/<class>/*``, and ``root/test`` when it exists.

    Labels index the class folders of ``root/train`` in sorted order; val and test may lack a
    class but may not add one. Without ``root/test`` the test stage evaluates val.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        image_size: the side of the square crops the model receives.
        batch_size: images per batch (per device).
        num_workers: DataLoader worker processes (and verification threads).
        class_names: a mapping from class folder name to a human-readable name (for example
            ImageNet wnids to words); every folder must be in it. None keeps the folder names.
        scale: RandomResizedCrop's range of the crop's area, as a fraction of the image's.
        hflip: probability of a horizontal flip in training.
        auto_augment: ``trivialaugment``, ``randaugment`` or None.
        randaugment_num_ops, randaugment_magnitude: RandAugment's N and M.
        random_erasing: probability of RandomErasing in training.
        crop_ratio: evaluation resizes the shorter side to ``image_size / crop_ratio`` and
            takes the centre crop.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        verify: decode every image of a split once at setup (see the module docstring).
        skip_corrupt: leave unreadable images out (counted in a warning) instead of failing;
            needs ``verify``.
        pin_memory: page-locked batches; None pins them when training on a CUDA device.
        decode_device: ``cpu`` decodes and augments in the DataLoader workers; ``cuda`` has
            the workers read JPEG bytes only and decodes and augments each batch on the device
            it is moved to (:mod:`glimpse.data.images.device_decode`; other formats are decoded in
            the workers), the next batch while the model trains on this one
            (:class:`~glimpse.data.prefetch.PrefetchingLoader`, attached to a trainer). Batches
            are :class:`LabelledImages` either way.
    """

    KIND = LABELLED_IMAGES
    #: Whether every class folder of val and test must be a class of train. A datamodule that
    #: reads chosen classes of a larger tree (an ImageNet subset) sets it False.
    ALL_FOLDERS_ARE_CLASSES = True

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 4,
        class_names: Mapping[str, str] | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        hflip: float = 0.5,
        auto_augment: Literal["trivialaugment", "randaugment"] | None = None,
        randaugment_num_ops: int = 2,
        randaugment_magnitude: int = 9,
        random_erasing: float = 0.0,
        crop_ratio: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        verify: bool = True,
        skip_corrupt: bool = False,
        pin_memory: bool | None = None,
        decode_device: Literal["cpu", "cuda"] = "cpu",
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if decode_device not in ("cpu", "cuda"):
            raise ConfigError(f"data.decode_device={decode_device!r} must be cpu or cuda.")
        check_verification(verify, skip_corrupt)
        self.mean, self.std = normalisation(mean, std)
        self.root = Path(root)
        self.image_size = int(image_size)
        self.class_name_map = dict(class_names) if class_names is not None else None
        self.verify, self.skip_corrupt = verify, skip_corrupt
        self.decode_device = decode_device
        self.transforms = {
            "train": train_transform(
                self.image_size,
                scale,
                hflip,
                auto_augment,
                randaugment_num_ops,
                randaugment_magnitude,
                random_erasing,
                self.mean,
                self.std,
            ),
            "eval": eval_transform(self.image_size, crop_ratio, self.mean, self.std),
        }
        self.datasets: dict[str, ClassFolder] = {}

    def split_folder(self, split: str) -> Path:
        """Where ``split`` is read from: ``root/test``, or ``root/val`` when there is none."""
        if split == "test" and not (self.root / "test").is_dir():
            return self.root / "val"
        return self.root / split

    def setup(self, stage: str | None = None) -> None:
        """Index the classes and the images of the splits ``stage`` needs (all for None),
        each split once per datamodule, verifying its images when ``verify``."""
        if self._spec is None:
            self._spec = self._build_spec(class_folders(self.root / "train"))
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self.dataset(split)

    def metadata(self) -> dict:
        """Provenance kept in the spec's metadata."""
        return {"root": str(self.root)}

    def _build_spec(self, folders: list[str]) -> DataSpec:
        names = folders
        if self.class_name_map is not None:
            missing = [f for f in folders if f not in self.class_name_map]
            if missing:
                raise ConfigError(
                    f"data.class_names has no name for the class folder(s) {', '.join(missing)} "
                    f"of {self.root / 'train'}."
                )
            names = [self.class_name_map[f] for f in folders]
        if len(folders) < 2:
            raise DataError(
                f"{self.root / 'train'} holds {len(folders)} class folder(s); classification "
                "needs at least 2."
            )
        return DataSpec(
            kind=LABELLED_IMAGES,
            class_names=tuple(names),
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            metadata={**self.metadata(), "class_folders": list(folders)},
        )

    def dataset(self, split: str) -> ClassFolder:
        """The dataset of ``split``, indexed (and verified) on first use; the test split is
        the val dataset itself when there is no ``root/test``."""
        if split not in self.datasets:
            if split == "test" and self.split_folder("test") == self.split_folder("val"):
                self.datasets[split] = self.dataset("val")
            else:
                self.datasets[split] = self._build_split(split)
        return self.datasets[split]

    def _build_split(self, split: str) -> ClassFolder:
        folder = self.split_folder(split)
        classes = self.spec.metadata["class_folders"]
        if split != "train" and self.ALL_FOLDERS_ARE_CLASSES:
            extra = sorted(set(class_folders(folder)) - set(classes))
            if extra:
                raise DataError(
                    f"{folder} has class folder(s) {', '.join(extra)} that {self.root / 'train'} "
                    "lacks; every class needs training images."
                )
        on_device = self.decode_device == "cuda"
        dataset = ClassFolder(
            folder,
            classes,
            transform=None if on_device else self.transforms[_transform_kind(split)],
            loader=partial(read_encoded, fallback=open_rgb) if on_device else open_rgb,
            allow_empty=split != "train",
        )
        if self.verify:
            self._verify(dataset, split, folder)
        counts = np.bincount(dataset.targets, minlength=len(classes))
        log.info(
            "%s split: %d images in %d classes from %s (%d to %d per class)",
            split,
            len(dataset),
            len(classes),
            folder,
            counts.min(),
            counts.max(),
        )
        if len(dataset) == 0:
            raise DataError(f"{folder} holds no images in the class folders of the train split.")
        return dataset

    def _verify(self, dataset: ClassFolder, split: str, folder: Path) -> None:
        """Decode every image of ``dataset``; raise on unreadable ones, or drop and count them
        with ``skip_corrupt``."""
        paths = [path for path, _ in dataset.samples]
        kept = readable_images(paths, self.num_workers, self.skip_corrupt, split, folder)
        if len(kept) < len(paths):
            dataset.keep([dataset.samples[index] for index in kept])

    def split_loader(self, split: str) -> DataLoader:
        """The split's DataLoader (:meth:`~glimpse.data.base.GlimpseDataModule.loader`)."""
        collate = (
            partial(collate_encoded, split=split)
            if self.decode_device == "cuda"
            else collate_labelled_images
        )
        if self.decode_device != "cuda":
            return self.loader(self.dataset(split), split == "train", collate)
        return self.loader(
            self.dataset(split), split == "train", collate, prepare_on_device=self.decode_on
        )

    def decode_on(self, batch: EncodedImages, device: torch.device) -> LabelledImages:
        """``batch`` decoded and transformed on ``device``: what Lightning's transfer and
        :meth:`on_after_batch_transfer` do to it, done ahead by the prefetching loader."""
        return self.on_after_batch_transfer(labels_to_device(batch, device), 0)

    def transfer_batch_to_device(
        self, batch: object, device: torch.device, dataloader_idx: int
    ) -> object:
        """Lightning's transfer, but JPEG bytes stay in CPU memory for the decoder."""
        if isinstance(batch, EncodedImages):
            return labels_to_device(batch, device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: object, dataloader_idx: int) -> object:
        """With ``decode_device="cuda"``, decode and transform the batch on its device."""
        if isinstance(batch, EncodedImages):
            transform = self.transforms[_transform_kind(batch.split)]
            return decode_to_labelled_images(batch, transform, open_rgb)
        return batch
