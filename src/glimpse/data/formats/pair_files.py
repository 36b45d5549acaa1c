"""Image-text pair files (CSV, TSV, JSONL) and the seeded split of a single file, for
:mod:`glimpse.data.image_text.sources`.

A file lists (image path, caption) rows; the rows of one image make one image with several
captions (a JSONL caption may also be a list). Malformed input raises a DataError naming the file
and line: a missing column or key, an empty image path or caption, a line that is not JSON.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glimpse.errors import ConfigError, DataError


def _add(captions: dict[str, list[str]], where: str, image: Any, caption: Any) -> None:
    """Add one row's image and caption(s), raising ValueError naming ``where`` when either is
    empty."""
    image = str(image or "").strip()
    texts = caption if isinstance(caption, list) else [caption]
    texts = [str(t or "").strip() for t in texts]
    if not image:
        raise DataError(f"{where}: the image path is empty.")
    if not texts or not all(texts):
        raise DataError(f"{where}: empty caption for the image {image}; fix or remove the row.")
    captions.setdefault(image, []).extend(texts)


def read_pair_file(
    path: str | os.PathLike,
    format: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
) -> dict[str, list[str]]:
    """Captions by image path (as written in the file), in file order, from a ``csv``,
    ``tsv`` or ``jsonl`` pairs file (``format``; None: by the file's suffix, ``.tsv``,
    ``.jsonl`` or else CSV). Raises a DataError naming the file (and line) for a missing column
    or key, an empty image or caption, or a line that is not a JSON object."""
    path = Path(path)
    format = format or {".tsv": "tsv", ".jsonl": "jsonl"}.get(path.suffix, "csv")
    if format not in ("csv", "tsv", "jsonl"):
        raise ValueError(f"Pairs files are csv, tsv or jsonl, not {format!r}.")
    captions: dict[str, list[str]] = {}
    if format == "jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{lineno}: not a JSON object ({error}).") from error
                missing = [
                    k
                    for k in (image_column, caption_column)
                    if not isinstance(row, dict) or k not in row
                ]
                if missing:
                    raise DataError(
                        f"{path}:{lineno}: no key {missing[0]!r} in {line.strip()[:80]!r}; set "
                        "data.source.image_column and caption_column to the file's keys."
                    )
                _add(captions, f"{path}:{lineno}", row[image_column], row[caption_column])
        return captions
    delimiter = "\t" if format == "tsv" else ","
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        for column in (image_column, caption_column):
            if column not in header:
                raise DataError(
                    f"{path}:1: no column {column!r} in the header {header}; set "
                    "data.source.image_column and caption_column to the file's columns."
                )
        image_at, caption_at = header.index(image_column), header.index(caption_column)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, but the header has {len(header)}.")
            _add(captions, where, row[image_at], row[caption_at])
    return captions


def seeded_split(
    names: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """``names`` sorted, shuffled with ``seed`` and cut into val (``val_fraction``, at least
    one), test (``test_fraction``, possibly none) and train (the rest, at least one)."""
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ConfigError(
            f"data.val_fraction={val_fraction} must be in (0, 1) and data.test_fraction="
            f"{test_fraction} in [0, 1)."
        )
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    val = max(1, round(len(shuffled) * val_fraction))
    test = round(len(shuffled) * test_fraction)
    if len(shuffled) - val - test < 1:
        raise ConfigError(
            f"{len(shuffled)} images are too few for data.val_fraction={val_fraction} and "
            f"data.test_fraction={test_fraction} to leave any for training."
        )
    return {
        "val": shuffled[:val],
        "test": shuffled[val : val + test],
        "train": shuffled[val + test :],
    }
