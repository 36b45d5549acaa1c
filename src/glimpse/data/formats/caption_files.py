"""Parsers for image-caption annotation files (Flickr8k, its Kaggle CSV, COCO captions,
Karpathy's split files).

The Flickr8k, Kaggle and COCO parsers return captions as ``dict[image file name,
list[caption]]``, captions in file order; the Karpathy parser returns one record per image.
Malformed input raises a :class:`~glimpse.errors.DataError` naming the file (and line, for
text files).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

from glimpse.errors import DataError

log = logging.getLogger(__name__)

#: A Flickr8k key whose extension has a stray ``.<digits>`` after it, e.g. the
#: ``2258277193_586949ec62.jpg.1`` key of the original token file.
_QUIRK_SUFFIX = re.compile(r"(\.[A-Za-z]+)\.\d+$")


def read_flickr8k_tokens(path: str | Path) -> dict[str, list[str]]:
    """Parse the official ``Flickr8k.token.txt``: ``name.jpg#k<TAB>caption`` per line.

    A key like ``name.jpg.1#k`` is mapped to ``name.jpg`` (the number of such lines is
    logged). Captions are stripped of surrounding whitespace; blank lines are skipped.
    """
    path = Path(path)
    captions: dict[str, list[str]] = {}
    fixed = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            name, hash_, k = key.partition("#")
            caption = caption.strip()
            if not sep or not hash_ or not name or not k.isdigit() or not caption:
                raise DataError(
                    f"{path}:{lineno}: expected 'name.jpg#k<TAB>caption', got {line[:80]!r}"
                )
            name, n = _QUIRK_SUFFIX.subn(r"\1", name)
            fixed += n
            captions.setdefault(name, []).append(caption)
    if fixed:
        log.info("%s: mapped %d lines with a 'name.jpg.N' key to 'name.jpg'", path, fixed)
    return captions


def read_kaggle_captions(path: str | Path) -> dict[str, list[str]]:
    """Parse the Kaggle Flickr8k ``captions.txt`` CSV with an ``image,caption`` header."""
    path = Path(path)
    captions: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["image", "caption"]:
            raise DataError(f"{path}:1: expected the header 'image,caption', got {header!r}")
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"{path}:{reader.line_num}: expected 'image,caption', got {row!r}")
            captions.setdefault(row[0].strip(), []).append(row[1].strip())
    return captions


def read_split_list(path: str | Path) -> list[str]:
    """Image file names, one per line (e.g. ``Flickr_8k.trainImages.txt``), blanks skipped."""
    with Path(path).open(encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_coco_captions(path: str | Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Parse a COCO captions JSON (e.g. ``captions_train2017.json``).

    Returns ``(captions by file name, image id by file name)``. Images without captions
    are kept with an empty list; an annotation naming an unknown image raises.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = data["images"]
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO captions JSON ({e!r})") from e
    ids: dict[str, int] = {}
    names: dict[int, str] = {}
    for image in images:
        ids[image["file_name"]] = int(image["id"])
        names[int(image["id"])] = image["file_name"]
    captions: dict[str, list[str]] = {name: [] for name in ids}
    for i, ann in enumerate(annotations):
        name = names.get(int(ann["image_id"]))
        if name is None:
            raise DataError(
                f"{path}: annotation {i} (id {ann.get('id')}) names unknown image id "
                f"{ann['image_id']}"
            )
        captions[name].append(ann["caption"].strip())
    return captions, ids


def captions_with_images(
    captions: dict[str, list[str]], image_dir: str | Path
) -> tuple[dict[str, list[str]], int]:
    """Keep the captions whose image file exists in ``image_dir``.

    Returns ``(kept captions, number of images missing)``; a warning gives the count.
    """
    image_dir = Path(image_dir)
    present = {p.name for p in image_dir.iterdir() if p.is_file()}
    kept = {name: caps for name, caps in captions.items() if name in present}
    missing = len(captions) - len(kept)
    if missing:
        log.warning(
            "%d of %d captioned images are missing from %s; their captions are left out",
            missing,
            len(captions),
            image_dir,
        )
    return kept, missing


#: Karpathy's split names, mapped to the splits they are used as: ``restval`` (the 30,504
#: COCO val2014 images outside his 5,000 val and 5,000 test images) joins train.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


class KarpathyImage(NamedTuple):
    """One image of a Karpathy split file: its split (``restval`` already mapped to
    ``train``), COCO id (None in the Flickr files, which have none), ``filepath`` folder
    (``train2014``/``val2014``; empty when absent), file name and captions."""

    split: str
    cocoid: int | None
    filepath: str
    filename: str
    captions: list[str]


def read_karpathy_split(path: str | Path) -> list[KarpathyImage]:
    """Parse a Karpathy split file (``dataset_coco.json``; Karpathy & Fei-Fei 2015):
    ``{"images": [{"filepath", "filename", "cocoid", "split", "sentences": [{"raw"}]}]}``.

    Captions are the stripped ``raw`` sentences, in file order.
    """
    path = Path(path)
    try:
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a Karpathy split file ({e!r})") from e
    records = []
    for i, image in enumerate(images):
        try:
            split = KARPATHY_SPLITS[image["split"]]
            cocoid = image.get("cocoid")
            records.append(
                KarpathyImage(
                    split=split,
                    cocoid=int(cocoid) if cocoid is not None else None,
                    filepath=image.get("filepath", ""),
                    filename=image["filename"],
                    captions=[s["raw"].strip() for s in image["sentences"]],
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{path}: image {i} is not a Karpathy record with a split in "
                f"{sorted(KARPATHY_SPLITS)}, a filename and sentences ({e!r})"
            ) from e
    return records
