"""The synthetic shapes (:mod:`glimpse.data.synthetic.shapes`) as datamodules: each writes its
set once in a real on-disk format and reads it with the real datamodule of that format.

* :class:`ShapesDataModule`: classification, an ImageFolder read by
  :class:`~glimpse.data.images.image_folder.ImageFolderDataModule`.
* :class:`ShapesCaptionsDataModule`: five captions per image in Flickr8k's layout, read by
  :class:`~glimpse.data.captions.flickr8k.Flickr8kDataModule`.
* :class:`ShapesDetectionDataModule`: boxes in COCO's format, read by
  :class:`~glimpse.data.detection.coco.CocoDetectionDataModule`.
* :class:`ShapesPairsDataModule`: one caption per image in a CSV pairs file, read by
  :class:`~glimpse.data.image_text.datamodule.ImageTextDataModule` through
  :class:`ShapesPairs`.

A set's folder is named by every parameter of its contents, so changing one writes a new set
instead of reading a stale one; the writers replace the folder atomically, so a folder under
its final name is whole. The spec's metadata names the writer and its parameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from glimpse.data.captions.flickr8k import Flickr8kDataModule
from glimpse.data.detection.coco import CocoDetectionDataModule
from glimpse.data.image_text.datamodule import ImageTextDataModule
from glimpse.data.image_text.sources import PairFiles, PairSource, Reading
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.synthetic.shapes import write_coco, write_flickr8k, write_imagefolder, write_pairs

log = logging.getLogger(__name__)

#: How the classification and detection sets share their images among the splits.
SPLIT_FRACTIONS = MappingProxyType({"train": 0.8, "val": 0.1, "test": 0.1})


@dataclass(frozen=True)
class WrittenSet:
    """A shapes set that ``writer`` writes to ``root``, called as ``writer(root, num, image_size,
    seed, **options)``."""

    writer: Callable[..., Path]
    root: Path
    num: int
    image_size: int
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def write(self) -> None:
        """Write the set unless its folder exists."""
        if self.root.is_dir():
            return
        log.info("Writing the shapes set of %s to %s", self.writer.__name__, self.root)
        self.writer(self.root, self.num, self.image_size, self.seed, **self.options)

    def metadata(self, num_name: str) -> dict[str, Any]:
        """The writer's name and parameters (the split fractions aside), for the spec;
        ``num_name`` names the count, as the writer does."""
        options = {k: v for k, v in self.options.items() if k != "splits"}
        return {
            "generator": f"{self.writer.__module__}.{self.writer.__name__}",
            num_name: self.num,
            "seed": self.seed,
            **options,
        }


class ShapesDataModule(ImageFolderDataModule):
    """The synthetic shapes classification set: 7 classes, one large shape per image among
    small distractors, on varied backgrounds.

    :meth:`prepare_data` writes it once to ``data_dir/shapes_<image_size>_<seed>_n<num_per_class>
    _d<distractors>`` (``train/``, ``val/``, ``test/`` taking 80/10/10 % of each class); it is
    then read as an ImageFolder.

    Args:
        data_dir: where the generated folder goes.
        image_size: the side of the generated images and of the model's input.
        num_per_class: images per class over all splits.
        seed: the generator's seed; the same seed gives the same files.
        distractors: up to this many small shapes of other kinds per image.
        **kwargs: any argument of :class:`ImageFolderDataModule` but ``root``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        image_size: int = 32,
        num_per_class: int = 300,
        seed: int = 0,
        distractors: int = 2,
        **kwargs,
    ) -> None:
        name = f"shapes_{image_size}_{seed}_n{num_per_class}_d{distractors}"
        super().__init__(root=Path(data_dir) / name, image_size=image_size, **kwargs)
        options = {"splits": SPLIT_FRACTIONS, "distractors": distractors}
        self.written = WrittenSet(
            write_imagefolder, self.root, num_per_class, image_size, seed, options
        )

    def metadata(self) -> dict:
        return {**super().metadata(), **self.written.metadata("num_per_class")}

    def prepare_data(self) -> None:
        """Write the set unless its folder exists."""
        self.written.write()


class ShapesCaptionsDataModule(Flickr8kDataModule):
    """Synthetic shapes with five generated captions each, written once to
    ``data_dir/shapes_captions_<image_size>_<seed>_n<num_images>_s<max_shapes>`` in the official
    Flickr8k layout and read as such (75/12.5/12.5 % train/val/test).

    Args:
        data_dir: where the generated folder goes.
        num_images: images over all splits.
        image_size: the side of the generated images and of the model's input.
        seed: the generator's seed; the same seed gives the same files.
        max_shapes: up to this many shapes per image.
        min_word_freq, crop_ratio: as in
            :class:`~glimpse.data.captions.datamodule.CaptionDataModule` (every word is kept;
            the images are used whole).
        **kwargs: any other argument of
            :class:`~glimpse.data.captions.datamodule.CaptionDataModule`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        num_images: int = 1200,
        image_size: int = 64,
        seed: int = 0,
        max_shapes: int = 3,
        min_word_freq: int = 1,
        crop_ratio: float = 1.0,
        **kwargs,
    ) -> None:
        name = f"shapes_captions_{image_size}_{seed}_n{num_images}_s{max_shapes}"
        super().__init__(
            root=Path(data_dir) / name,
            layout="official",
            image_size=image_size,
            min_word_freq=min_word_freq,
            crop_ratio=crop_ratio,
            **kwargs,
        )
        options = {"max_shapes": max_shapes}
        self.written = WrittenSet(write_flickr8k, self.root, num_images, image_size, seed, options)

    def metadata(self) -> dict:
        return {**super().metadata(), **self.written.metadata("num_images")}

    def prepare_data(self) -> None:
        """Write the set unless its folder exists."""
        self.written.write()


class ShapesDetectionDataModule(CocoDetectionDataModule):
    """The synthetic shapes as a detection set: 1 to ``max_shapes`` shapes of 7 kinds per image,
    each with a box tight around its visible pixels.

    :meth:`prepare_data` writes it once to
    ``data_dir/shapes_coco_<image_size>_<seed>_n<num_images>_s<max_shapes>`` (80/10/10 %
    train/val/test: ``images/<split>/`` and ``annotations/instances_<split>.json``); it is then
    read in COCO's format. The images are used at their size (no crop).

    Args:
        data_dir: where the generated folder goes (and, by default, the ``cache_dir`` of
            restricted annotation files).
        num_images: images over all splits.
        image_size: the side of the generated images, and of the model's input.
        seed: the generator's seed; the same seed gives the same files.
        max_shapes: up to this many shapes per image.
        train_scales, max_size, eval_scale: as in :class:`CocoDetectionDataModule`; None is
            ``image_size`` (the images are used at their generated size).
        random_crop: as in :class:`CocoDetectionDataModule`, off by default.
        **kwargs: any other argument of :class:`CocoDetectionDataModule` but the paths.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        num_images: int = 600,
        image_size: int = 128,
        seed: int = 0,
        max_shapes: int = 4,
        train_scales: Sequence[int] | None = None,
        max_size: int | None = None,
        eval_scale: int | None = None,
        random_crop: float = 0.0,
        **kwargs,
    ) -> None:
        name = f"shapes_coco_{image_size}_{seed}_n{num_images}_s{max_shapes}"
        paths = {}
        for split in SPLIT_FRACTIONS:
            paths[f"{split}_images"] = f"images/{split}"
            paths[f"{split}_annotations"] = f"annotations/instances_{split}.json"
        kwargs.setdefault("cache_dir", Path(data_dir) / "coco_subsets")
        root = Path(data_dir) / name
        super().__init__(
            root=root,
            train_scales=train_scales or (image_size,),
            max_size=max_size or image_size,
            eval_scale=eval_scale or image_size,
            random_crop=random_crop,
            **paths,
            **kwargs,
        )
        self.image_size = image_size
        options = {"splits": SPLIT_FRACTIONS, "max_shapes": max_shapes}
        self.written = WrittenSet(write_coco, root, num_images, image_size, seed, options)

    def metadata(self) -> dict:
        return {**super().metadata(), **self.written.metadata("num_images")}

    def prepare_data(self) -> None:
        """Write the set unless its folder exists."""
        self.written.write()


class ShapesPairs(PairFiles):
    """Synthetic shapes with one generated caption each: written once by
    :func:`~glimpse.data.synthetic.shapes.write_pairs` to
    ``path/shapes_pairs_<image_size>_<seed>_n<num_images>_s<max_shapes>[_kinds]`` (``images/*.jpg``
    and ``pairs.csv``), then read as a CSV pairs file split by image with ``split_seed``.

    Args:
        path: where the generated folder goes.
        reading: the datamodule's settings; the images are written at its ``image_size``.
        num_images: images over all splits.
        seed: the generator's seed; the same seed gives the same files.
        max_shapes: up to this many shapes per image.
        captions: ``scene`` (colours, sizes, places and the background) or ``kinds`` (the
            shape kinds only).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        reading: Reading,
        *,
        num_images: int = 5000,
        seed: int = 0,
        max_shapes: int = 2,
        captions: str = "scene",
    ) -> None:
        name = f"shapes_pairs_{reading.image_size}_{seed}_n{num_images}_s{max_shapes}"
        root = Path(path) / (name if captions == "scene" else f"{name}_{captions}")
        super().__init__(root / "pairs.csv", reading, format="csv", image_root=root)
        options = {"max_shapes": max_shapes, "captions": captions}
        self.written = WrittenSet(write_pairs, root, num_images, reading.image_size, seed, options)

    def prepare(self) -> None:
        """Write the set unless its folder exists."""
        self.written.write()

    def metadata(self) -> dict[str, Any]:
        return self.written.metadata("num_images")


class ShapesPairsDataModule(ImageTextDataModule):
    """The synthetic shapes pairs (:class:`ShapesPairs`) for CLIP.

    Args:
        data_dir: where the generated folder goes.
        source: :class:`ShapesPairs`' options: ``num_images``, ``seed``, ``max_shapes``,
            ``captions``.
        **kwargs: any other argument of
            :class:`~glimpse.data.image_text.datamodule.ImageTextDataModule` (image size, split
            fractions, tokenizer, zero-shot data, ...).
    """

    FORMATS: ClassVar[dict[str, Callable[..., PairSource]]] = {"shapes": ShapesPairs}

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        source: Mapping[str, Any] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(format="shapes", path=data_dir, source=source, **kwargs)
