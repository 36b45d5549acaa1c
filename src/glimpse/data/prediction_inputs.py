"""Image files named on eval.py's command line, prepared as a checkpoint's evaluation data was.

The checkpoint's :class:`~glimpse.data.spec.DataSpec` says how: labelled, captioned, multi-view
and image-text data resize the shorter side to ``image_size / crop_ratio`` and centre-crop
(:func:`glimpse.data.images.transforms.eval_transform`); detection resizes the shorter side to the
spec's ``eval_scale`` within ``max_size`` and keeps the whole image
(:func:`glimpse.data.detection.transforms.eval_transform`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glimpse.batches import DETECTION
from glimpse.data.detection.transforms import eval_transform as detection_eval_transform
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.transforms import eval_transform
from glimpse.data.spec import DataSpec
from glimpse.errors import MissingFileError
from glimpse.prediction import DecodedImage

UNNORMALISED = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def decode_image_files(
    paths: Sequence[str], spec: DataSpec, crop_ratio: float = 0.875
) -> tuple[DecodedImage, ...]:
    """Each file decoded (EXIF-upright RGB) and transformed for the task ``spec`` describes;
    :class:`MissingFileError` naming the first path that is not a file."""
    for path in paths:
        if not Path(path).is_file():
            raise MissingFileError(f"Image {path} does not exist; pass image=/path/to/photo.jpg.")
    if spec.kind == DETECTION:
        scale, max_size = spec.metadata["eval_scale"], spec.metadata["max_size"]
        transform = detection_eval_transform(scale, max_size, spec.mean, spec.std)
        view = None
    else:
        transform = eval_transform(spec.image_size, crop_ratio, spec.mean, spec.std)
        view = eval_transform(spec.image_size, crop_ratio, *UNNORMALISED)
    decoded = []
    for path in paths:
        image = open_rgb(path)
        if view is None:
            picture = np.asarray(image, dtype=np.float32) / 255.0
        else:
            picture = view(image).permute(1, 2, 0).numpy()
        size = (image.height, image.width)
        decoded.append(DecodedImage(str(path), transform(image), picture, size))
    return tuple(decoded)
