"""Decoding image files as real photo collections need, and finding the unreadable ones.

* :func:`open_rgb` decodes one file: EXIF orientation applied, grayscale, palette, CMYK, 16-bit
  and alpha images turned into 8-bit RGB, and any unreadable file reported as a
  :class:`CorruptImageError` naming it.
* :func:`readable_images` decodes every file of a split once (on threads, in JPEG draft mode)
  and raises on, or counts and leaves out, the unreadable ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from glimpse.errors import DataError

log = logging.getLogger(__name__)

#: Background that transparent pixels are composited onto, as a browser shows them.
ALPHA_BACKGROUND = (255, 255, 255)
SHOWN_BAD_FILES = 5


class CorruptImageError(DataError):
    """An image file cannot be decoded (truncated, corrupt or not an image)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode.

    Grayscale is repeated over the three channels; 16-bit grayscale (``I;16``) is scaled to
    8 bits rather than clipped; palette, CMYK and YCbCr images are converted by Pillow; images
    with transparency (``RGBA``, ``LA``, ``PA``, or a palette with a transparent entry) are
    composited onto :data:`ALPHA_BACKGROUND` instead of keeping the colour under transparent
    pixels, which is often arbitrary.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.uint16).astype(np.float32)
        return Image.fromarray(np.rint(pixels / 257).astype(np.uint8)).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | os.PathLike, draft: bool = False) -> Image.Image:
    """Decode the image at ``path`` as 8-bit RGB, turned upright by its EXIF orientation.

    With ``draft`` a JPEG is decoded at 1/8 scale (every byte is still read, so truncation
    is still noticed): the verification pass's shortcut.

    Raises :class:`CorruptImageError` naming ``path`` when the file is not a readable image.
    """
    try:
        with Image.open(path) as image:
            if draft:
                image.draft(None, (1, 1))
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright)
    except Exception as error:  # Pillow's decoders raise many types on malformed files
        raise CorruptImageError(f"{path} cannot be decoded as an image ({error})") from error


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be decoded, or None when it can."""
    try:
        open_rgb(path, draft=True)
    except CorruptImageError as error:
        return str(error)
    return None


def readable_images(
    paths: Sequence[str | os.PathLike],
    workers: int,
    skip: bool,
    split: str,
    folder: str | os.PathLike | None = None,
) -> list[int]:
    """Decode every image of ``split``'s ``paths`` (with ``workers`` threads) and return the
    indices of the readable ones. An unreadable one raises :class:`CorruptImageError` naming
    it, unless ``skip`` (``data.skip_corrupt``): then they are counted and named in a warning.
    ``folder``, when given, is named in both."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(_unreadable, paths))
    bad = [problem for problem in problems if problem is not None]
    place = f"the {split} split" + (f" ({folder})" if folder is not None else "")
    if bad and not skip:
        raise CorruptImageError(
            f"{bad[0]}; {len(bad)} of the {len(paths)} images of {place} are unreadable. "
            "Replace or delete them, or set data.skip_corrupt=true to skip them."
        )
    if bad:
        shown = "; ".join(bad[:SHOWN_BAD_FILES]) + ("; ..." if len(bad) > SHOWN_BAD_FILES else "")
        log.warning(
            "Skipped %d unreadable image(s) of the %d in %s, as data.skip_corrupt=true: %s",
            len(bad),
            len(paths),
            place,
            shown,
        )
    return [index for index, problem in enumerate(problems) if problem is None]
