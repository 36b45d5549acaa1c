"""COCO instances files as training targets: the categories chosen, the images kept, their boxes
clipped and counted, and the annotation file restricted to an evaluated subset.

:func:`index_split` turns one split's annotation file (read by pycocotools) into a
:class:`DetectionSplit`: crowd annotations (``iscrowd=1``) are left out of the targets, as in
DETR; boxes are clipped to the image, and those with no width or height left are dropped
(both counted); images without boxes are kept. With fewer categories than the file's, only
the images holding a non-crowd annotation of one are kept, and a seeded fraction of the
images may be drawn. :func:`write_restricted` writes the instances file of such a subset, so
that COCOeval scores exactly the images and categories evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from glimpse.data.images.decode import SHOWN_BAD_FILES
from glimpse.errors import ConfigError, DataError, MissingFileError


def categories(coco: COCO) -> dict[int, str]:
    """Category id -> name, in increasing id order."""
    return {int(i): str(coco.cats[i]["name"]) for i in sorted(coco.cats)}


def select_categories(known: Mapping[int, str], names: Sequence[str] | None) -> list[int]:
    """The ids of the categories named ``names`` (all for None), in increasing order."""
    if names is None:
        return sorted(known)
    unknown = sorted(set(names) - set(known.values()))
    if unknown:
        raise ConfigError(
            f"data.subset_categories names {', '.join(unknown)}, which the annotation file "
            f"lacks; its categories include {', '.join(list(known.values())[:10])}."
        )
    return sorted(i for i, name in known.items() if name in set(names))


@dataclass(frozen=True)
class DetectionSplit:
    """One split's images and their training targets, in the annotation file's order.

    ``boxes[i]`` is ``(n, 4)`` float32 ``xyxy`` in pixels of image ``i`` (clipped to it),
    ``labels[i]`` ``(n,)`` int64; ``sizes[i]`` is its ``(h, w)`` as annotated.
    ``annotation_file`` is the file COCOeval should score the split against.
    """

    image_ids: tuple[int, ...]
    paths: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]
    boxes: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    annotation_file: Path
    counts: dict[str, int] = field(default_factory=dict)


def _selected_images(
    coco: COCO, category_ids: list[int], fraction: float | None, seed: int
) -> list[dict]:
    """The image records kept: with fewer categories than the file's, those holding a
    non-crowd annotation of one; then a seeded ``fraction`` of them."""
    images = list(coco.dataset.get("images", []))
    if len(category_ids) < len(coco.cats):
        wanted = set(category_ids)
        images = [
            image
            for image in images
            if any(
                a["category_id"] in wanted and not a.get("iscrowd", 0)
                for a in coco.imgToAnns.get(image["id"], [])
            )
        ]
    if fraction is not None and images:
        count = max(1, round(fraction * len(images)))
        chosen = set(random.Random(seed).sample(range(len(images)), count))
        images = [image for i, image in enumerate(images) if i in chosen]
    return images


def index_split(
    coco: COCO,
    annotation_file: Path,
    image_dir: Path,
    category_ids: list[int],
    fraction: float | None = None,
    seed: int = 0,
) -> DetectionSplit:
    """The split's kept images (see :func:`_selected_images`) and their targets: crowd
    annotations left out, boxes clipped to the image and dropped when empty, each counted.

    Raises :class:`~glimpse.errors.DataError` naming the file for an image without
    ``width``/``height`` or an annotation of an unlisted category, and
    :class:`~glimpse.errors.MissingFileError` when image files are missing.
    """
    label_of = {c: i for i, c in enumerate(category_ids)}
    images = _selected_images(coco, category_ids, fraction, seed)
    ids, paths, sizes, all_boxes, all_labels, missing = [], [], [], [], [], []
    crowd = degenerate = 0
    for image in images:
        if "width" not in image or "height" not in image:
            raise DataError(f"Image {image['id']} of {annotation_file} has no width or height.")
        width, height = int(image["width"]), int(image["height"])
        boxes, labels = [], []
        for annotation in coco.imgToAnns.get(image["id"], []):
            category = annotation["category_id"]
            if category not in coco.cats:
                raise DataError(
                    f"Annotation {annotation.get('id')} of {annotation_file} has category_id "
                    f"{category}, which its categories do not list."
                )
            if category not in label_of:
                continue
            if annotation.get("iscrowd", 0):
                crowd += 1
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            x0, x1 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
            y0, y1 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
            if x1 <= x0 or y1 <= y0:
                degenerate += 1
                continue
            boxes.append((x0, y0, x1, y1))
            labels.append(label_of[category])
        path = image_dir / image["file_name"]
        if not path.is_file():
            missing.append(str(path))
        ids.append(int(image["id"]))
        paths.append(path)
        sizes.append((height, width))
        all_boxes.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, dtype=np.int64))
    if missing:
        raise MissingFileError(
            f"{len(missing)} of the {len(images)} images that {annotation_file} lists are "
            f"missing from {image_dir}, e.g. {', '.join(missing[:SHOWN_BAD_FILES])}."
        )
    counts = {
        "images": len(ids),
        "boxes": sum(len(b) for b in all_boxes),
        "crowd_excluded": crowd,
        "degenerate_dropped": degenerate,
        "images_without_boxes": sum(len(b) == 0 for b in all_boxes),
    }
    return DetectionSplit(
        tuple(ids),
        tuple(paths),
        tuple(sizes),
        tuple(all_boxes),
        tuple(all_labels),
        annotation_file,
        counts,
    )


def write_restricted(
    coco: COCO, image_ids: Sequence[int], category_ids: Sequence[int], folder: Path, stem: str
) -> Path:
    """An instances file with only ``image_ids`` and ``category_ids`` (and their annotations,
    crowd ones included, as COCOeval ignores detections on them), written atomically to
    ``folder/<stem>.<hash of its contents>.json`` unless already there; returns its path."""
    kept_images, kept_categories = set(image_ids), set(category_ids)
    document = {
        "info": coco.dataset.get("info", {}),
        "licenses": coco.dataset.get("licenses", []),
        "images": [image for image in coco.dataset["images"] if image["id"] in kept_images],
        "annotations": [
            a
            for a in coco.dataset.get("annotations", [])
            if a["image_id"] in kept_images and a["category_id"] in kept_categories
        ],
        "categories": [c for c in coco.dataset["categories"] if c["id"] in kept_categories],
    }
    data = json.dumps(document).encode("utf-8")
    path = folder / f"{stem}.{hashlib.sha256(data).hexdigest()[:16]}.json"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, path)
    return path
