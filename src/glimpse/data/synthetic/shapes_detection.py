"""The synthetic shapes (:mod:`glimpse.data.synthetic.shapes`) as a COCO-format detection set, read
by
:class:`~glimpse.data.detection.coco.CocoDetectionDataModule`: offline and CPU-sized."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from glimpse.data.detection.coco import CocoDetectionDataModule
from glimpse.data.synthetic.shapes import write_coco

log = logging.getLogger(__name__)


#: How :class:`ShapesDetectionDataModule` shares the images among the splits.
SHAPES_SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


class ShapesDetectionDataModule(CocoDetectionDataModule):
    """The synthetic shapes (:mod:`glimpse.data.synthetic.shapes`) as a detection set: 1 to
    ``max_shapes`` shapes of 7 kinds per image, each with a box tight around its visible
    pixels.

    :meth:`prepare_data` writes it once with :func:`~glimpse.data.synthetic.shapes.write_coco` to
    ``data_dir/shapes_coco_<image_size>_<seed>_n<num_images>_s<max_shapes>`` (80/10/10 %
    train/val/test: ``images/<split>/`` and ``annotations/instances_<split>.json``); it is
    then read in COCO's format. The images are used at their size (no crop).

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
        for split in SHAPES_SPLITS:
            paths[f"{split}_images"] = f"images/{split}"
            paths[f"{split}_annotations"] = f"annotations/instances_{split}.json"
        kwargs.setdefault("cache_dir", Path(data_dir) / "coco_subsets")
        super().__init__(
            root=Path(data_dir) / name,
            train_scales=train_scales or (image_size,),
            max_size=max_size or image_size,
            eval_scale=eval_scale or image_size,
            random_crop=random_crop,
            **paths,
            **kwargs,
        )
        self.num_images, self.image_size = num_images, image_size
        self.seed, self.max_shapes = seed, max_shapes

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "generator": "glimpse.data.synthetic.shapes.write_coco",
            "num_images": self.num_images,
            "seed": self.seed,
            "max_shapes": self.max_shapes,
        }

    def prepare_data(self) -> None:
        """Write the dataset unless its folder exists (written atomically, so it is whole)."""
        if self.root is None or self.root.is_dir():
            return
        log.info("Writing the shapes detection dataset to %s", self.root)
        write_coco(
            self.root,
            self.num_images,
            self.image_size,
            self.seed,
            splits=SHAPES_SPLITS,
            max_shapes=self.max_shapes,
        )
