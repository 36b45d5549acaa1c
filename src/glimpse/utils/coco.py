"""Reading COCO instances files with pycocotools, for the detection data and its metric."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from pycocotools.coco import COCO

from glimpse.errors import MissingFileError


def load_coco(path: Path) -> COCO:
    """Read and index an instances file with pycocotools (its progress lines silenced).

    Raises :class:`~glimpse.errors.MissingFileError` naming ``path`` when it is not a file.
    """
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; check data.root and the data.*_annotations paths, or set "
            "data.download=true for COCO 2017."
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))
