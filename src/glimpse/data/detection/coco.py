"""Object detection data in COCO's format, as a LightningDataModule of :class:`DetectionBatch`.

:class:`CocoDetectionDataModule` reads COCO 2017 (``train2017/``, ``val2017/``,
``annotations/instances_{train,val}2017.json``) or any dataset in COCO's instances format
(image folders and annotation files given by path) through pycocotools:

* classes are the annotation file's categories in increasing id order; label ``i`` is the
  ``i``-th, and the spec's ``metadata["category_ids"][i]`` maps it back to the file's
  ``category_id`` (COCO's 80 ids run from 1 to 90 with gaps). Every annotation file must list
  the same categories;
* the splits' targets are read by :mod:`glimpse.data.detection.coco_annotations`: crowd
  annotations (``iscrowd=1``) are left out of the targets, as in DETR; boxes are
  clipped to the image, and those with no width or height left are dropped (both counted,
  the dropped boxes with a warning); images without boxes are kept: they teach the model to
  predict no object;
* ``subset_fraction`` keeps a seeded random fraction of the training images
  (``eval_subset_fraction`` of the val and test images), and ``subset_categories`` only the
  named categories, which become the classes: their annotations and the images holding at
  least one non-crowd annotation of them (images without one, background-only images
  included, are left out). When a subset changes the val or test set, the annotation file
  restricted to it is written (atomically, named by its contents' hash) under ``cache_dir``,
  and the spec's ``metadata["annotation_files"]`` names it, so that COCOeval scores exactly
  the images and categories evaluated;
* ``download`` fetches from COCO's published addresses the archives that provide what
  ``root`` lacks (:func:`glimpse.data.coco2017.fetch_coco2017`: md5-checked, each path
  placed whole or not at all).

Images are decoded on their stored pixel grid, the one COCO's annotations use; when an
annotation's ``width`` and ``height`` only match the image turned upright by its EXIF
orientation (as labelling tools that show photos upright write them), that one is used.
Transforms and padding: :mod:`glimpse.data.detection.transforms`. The synthetic shapes
written in this format: :class:`~glimpse.data.synthetic.datamodules.ShapesDetectionDataModule`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from glimpse.batches import DETECTION
from glimpse.data.base import SPLITS, STAGE_SPLITS, GlimpseDataModule, normalisation
from glimpse.data.coco2017 import BASE_URL, PUBLISHED_MD5, fetch_coco2017
from glimpse.data.detection.coco_annotations import (
    DetectionSplit,
    categories,
    index_split,
    select_categories,
    write_restricted,
)
from glimpse.data.detection.transforms import (
    DETR_SCALES,
    DetectionSample,
    collate_detection,
    eval_transform,
    to_target,
    train_transform,
)
from glimpse.data.images.decode import CorruptImageError, to_rgb
from glimpse.data.images.transforms import IMAGENET_MEAN, IMAGENET_STD
from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError, DataError
from glimpse.utils.coco import load_coco

log = logging.getLogger(__name__)

#: EXIF orientations that swap an image's width and height.
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


def open_annotated(path: Path, height: int, width: int) -> Image.Image:
    """The image at ``path`` as 8-bit RGB on the pixel grid its annotation describes: as
    stored, or turned upright by its EXIF orientation when only that has the annotated
    ``width`` x ``height``. Raises :class:`CorruptImageError` naming an undecodable file and
    ValueError when neither grid has the annotated size."""
    try:
        with Image.open(path) as image:
            image.load()
            stored = image.size
            if stored != (width, height):
                image = ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow's decoders raise many types on malformed files
        raise CorruptImageError(f"{path} cannot be decoded as an image ({error})") from error
    if image.size != (width, height):
        raise DataError(
            f"{path} is {stored[0]}x{stored[1]} px but its annotation says {width}x{height}; "
            "fix the annotation file's width and height."
        )
    return to_rgb(image)


def _problem(path: Path, size: tuple[int, int]) -> str | None:
    """Why ``path`` cannot serve its annotation of ``(height, width)`` (undecodable, or of
    another size), or None. Decodes at 1/8 scale (every byte is still read)."""
    height, width = size
    try:
        with Image.open(path) as image:
            stored = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION)
            image.draft(None, (1, 1))
            image.load()
    except Exception as error:  # Pillow's decoders raise many types on malformed files
        return f"{path} cannot be decoded as an image ({error})"
    upright = stored[::-1] if orientation in TRANSPOSING_ORIENTATIONS else stored
    if (width, height) not in (stored, upright):
        return f"{path} is {stored[0]}x{stored[1]} px but its annotation says {width}x{height}"
    return None


class CocoDetectionDataset(Dataset):
    """A split's images with their targets, each as a :class:`DetectionSample` transformed
    by ``transform`` (a :mod:`~glimpse.data.detection.transforms` pipeline)."""

    def __init__(self, split: DetectionSplit, transform: v2.Transform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.image_ids)

    def __getitem__(self, index: int) -> DetectionSample:
        split = self.split
        height, width = split.sizes[index]
        image = open_annotated(split.paths[index], height, width)
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(split.boxes[index]), format="XYXY", canvas_size=(height, width)
        )
        labels = torch.from_numpy(split.labels[index])
        image, target = self.transform(image, {"boxes": boxes, "labels": labels})
        return DetectionSample(
            image,
            to_target(target["boxes"], target["labels"]),
            split.image_ids[index],
            (height, width),
        )


class CocoDetectionDataModule(GlimpseDataModule):
    """COCO 2017 instances, or any dataset in COCO's format (see the module docstring).

    Args:
        root: the folder the image and annotation paths are relative to (absolute paths are
            taken as they are); None: relative to the working directory.
        train_images, val_images: the folders of the split's images (``file_name`` is
            relative to them).
        train_annotations, val_annotations: the split's instances files.
        test_images, test_annotations: the test split's; None is val's (the test split is
            then the val split itself; COCO's test2017 has no public annotations).
        train_scales: the shorter sides training resizes an image to, one drawn per image.
        max_size: the longest side an image may have after resizing.
        eval_scale: the shorter side of evaluation images.
        random_crop: the probability of DETR's random crop in training; 0 disables it.
        hflip: the probability of a horizontal flip in training.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        batch_size: training images per batch (per device).
        eval_batch_size: val and test images per batch; None is ``batch_size``.
        num_workers: DataLoader worker processes (and verification threads).
        subset_fraction: None, or the fraction in (0, 1] of the training images kept (seeded).
        eval_subset_fraction: the same for the val and test images.
        subset_categories: None, or the names of the only categories used (the classes).
        subset_seed: the seed of the fractions' draws.
        cache_dir: where annotation files restricted to a val or test subset are written.
        download: fetch the COCO 2017 archives providing what ``root`` lacks.
        base_url: where the archives are fetched from; None is :data:`BASE_URL`.
        md5: archive name -> expected md5, replacing :data:`PUBLISHED_MD5` (for a mirror).
        verify: decode every image of a split at setup and check its size against its
            annotation; off by default, as COCO is large (a bad file then fails when loaded).
        pin_memory: page-locked batches; None pins them when training on a CUDA device.
    """

    KIND = DETECTION

    def __init__(
        self,
        root: str | os.PathLike | None = "data/coco",
        train_images: str = "train2017",
        train_annotations: str = "annotations/instances_train2017.json",
        val_images: str = "val2017",
        val_annotations: str = "annotations/instances_val2017.json",
        test_images: str | None = None,
        test_annotations: str | None = None,
        train_scales: Sequence[int] = DETR_SCALES,
        max_size: int = 1333,
        eval_scale: int = 800,
        random_crop: float = 0.5,
        hflip: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        subset_fraction: float | None = None,
        eval_subset_fraction: float | None = None,
        subset_categories: Sequence[str] | None = None,
        subset_seed: int = 0,
        cache_dir: str | os.PathLike = "data/coco_subsets",
        download: bool = False,
        base_url: str | None = None,
        md5: Mapping[str, str] | None = None,
        verify: bool = False,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        for name, value in (
            ("subset_fraction", subset_fraction),
            ("eval_subset_fraction", eval_subset_fraction),
        ):
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"data.{name}={value} must be null or in (0, 1].")
        if subset_categories is not None and not subset_categories:
            raise ConfigError("data.subset_categories is empty; name categories or set null.")
        self.mean, self.std = normalisation(mean, std)
        self.root = Path(root) if root is not None else None
        self.folders = {"train": train_images, "val": val_images}
        self.folders["test"] = test_images or val_images
        self.files = {"train": train_annotations, "val": val_annotations}
        self.files["test"] = test_annotations or val_annotations
        self.train_scales = tuple(int(s) for s in train_scales)
        self.max_size, self.eval_scale = int(max_size), int(eval_scale)
        self.fractions = {"train": subset_fraction}
        self.fractions["val"] = self.fractions["test"] = eval_subset_fraction
        self.subset_categories = list(subset_categories) if subset_categories else None
        self.subset_seed = subset_seed
        self.cache_dir = Path(cache_dir)
        self.download = download
        self.base_url = (base_url or BASE_URL).rstrip("/") + "/"
        self.md5 = {**PUBLISHED_MD5, **(md5 or {})}
        self.verify = verify
        self.transforms = {
            "train": train_transform(
                self.train_scales, self.max_size, random_crop, hflip, self.mean, self.std
            ),
            "eval": eval_transform(self.eval_scale, self.max_size, self.mean, self.std),
        }
        self.splits: dict[str, DetectionSplit] = {}
        self.datasets: dict[str, CocoDetectionDataset] = {}
        self.category_names: dict[int, str] | None = None
        self.category_ids: list[int] | None = None
        self.category_source: Path | None = None

    def path(self, relative: str) -> Path:
        """``relative`` under ``root`` (as it is when absolute or ``root`` is None)."""
        return Path(relative) if self.root is None else self.root / relative

    def prepare_data(self) -> None:
        """With ``download``, fetch, verify and extract the COCO 2017 archives providing the
        image folders and annotation files that ``root`` lacks."""
        if not self.download:
            return
        if self.root is None:
            raise ConfigError("data.download=true needs data.root, the folder to download into.")
        fetch_coco2017(
            self.root, [*self.folders.values(), *self.files.values()], self.base_url, self.md5
        )

    def setup(self, stage: str | None = None) -> None:
        """Index the splits ``stage`` needs (all for None), each once; when a subset changes
        the val or test set, index both, to name their restricted annotation files."""
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self.dataset(split)
        if self.fractions["val"] is not None or self.subset_categories is not None:
            self.split("val")
            self.split("test")

    def _same_as_val(self, split: str) -> bool:
        return split == "test" and (self.folders["test"], self.files["test"]) == (
            self.folders["val"],
            self.files["val"],
        )

    def split(self, name: str) -> DetectionSplit:
        """The indexed ``name`` split (``train``, ``val`` or ``test``), read on first use."""
        if name not in self.splits:
            self.splits[name] = self.split("val") if self._same_as_val(name) else self._read(name)
        return self.splits[name]

    def dataset(self, split: str) -> CocoDetectionDataset:
        """The transformed dataset of ``split``; test is val's own when it reads val."""
        if split not in self.datasets:
            if self._same_as_val(split):
                self.datasets[split] = self.dataset("val")
            else:
                transform = self.transforms["train" if split == "train" else "eval"]
                self.datasets[split] = CocoDetectionDataset(self.split(split), transform)
        return self.datasets[split]

    def _read(self, name: str) -> DetectionSplit:
        file = self.path(self.files[name])
        coco = load_coco(file)
        found = categories(coco)
        if self.category_names is None:
            self.category_names, self.category_source = found, file
            self.category_ids = select_categories(found, self.subset_categories)
        elif found != self.category_names:
            raise DataError(
                f"{file} lists other categories than {self.category_source}; every annotation "
                "file must list the same ids and names."
            )
        assert self.category_ids is not None
        folder = self.path(self.folders[name])
        fraction = self.fractions[name]
        split = index_split(coco, file, folder, self.category_ids, fraction, self.subset_seed)
        if name != "train" and (fraction is not None or self.subset_categories is not None):
            restricted = write_restricted(
                coco, split.image_ids, self.category_ids, self.cache_dir, file.stem
            )
            split = DetectionSplit(**{**split.__dict__, "annotation_file": restricted})
        if self.verify:
            self._verify(split, folder)
        counts = split.counts
        log.info("%s split: %s (%s, %s)", name, counts, file, folder)
        if counts["degenerate_dropped"]:
            log.warning(
                "%s split: dropped %d of the %d boxes of %s that have no width or height "
                "inside their image",
                name,
                counts["degenerate_dropped"],
                counts["degenerate_dropped"] + counts["boxes"],
                file,
            )
        if not split.image_ids:
            raise DataError(f"The {name} split of {file} holds no image after the subset options.")
        return split

    def _verify(self, split: DetectionSplit, folder: Path) -> None:
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            problems = list(pool.map(_problem, split.paths, split.sizes))
        bad = [p for p in problems if p is not None]
        if bad:
            raise CorruptImageError(
                f"{bad[0]}; {len(bad)} of the {len(problems)} images in {folder} cannot be used. "
                "Replace them or fix their annotations."
            )

    def metadata(self) -> dict:
        """Provenance kept in the spec's metadata."""
        return {"root": str(self.root) if self.root is not None else None}

    @property
    def spec(self) -> DataSpec:
        if self.category_ids is None or self.category_names is None:
            raise RuntimeError("Call prepare_data() and setup() before reading the spec.")
        annotation_files = {
            split: str(
                self.split(split).annotation_file
                if split in self.splits
                else self.path(self.files[split])
            )
            for split in ("val", "test")
        }
        return DataSpec(
            kind=DETECTION,
            class_names=tuple(self.category_names[i] for i in self.category_ids),
            image_size=self.max_size,
            mean=self.mean,
            std=self.std,
            metadata={
                **self.metadata(),
                "category_ids": list(self.category_ids),
                "annotation_files": annotation_files,
                "counts": {split: dict(s.counts) for split, s in self.splits.items()},
                "train_scales": list(self.train_scales),
                "eval_scale": self.eval_scale,
                "max_size": self.max_size,
            },
        )

    def split_loader(self, split: str) -> DataLoader:
        """The split's DataLoader (:meth:`~glimpse.data.base.GlimpseDataModule.loader`)."""
        return self.loader(self.dataset(split), split == "train", collate_detection)
