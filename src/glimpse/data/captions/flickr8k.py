"""Flickr8k (Hodosh, Young & Hockenmaier 2013): 8,091 Flickr photos with five captions each.

Two layouts are read (``layout="auto"`` picks the one found under ``root``):

* ``official``, the release's: ``Flicker8k_Dataset/`` (sic; ``Images/`` is accepted too)
  holding the photos, ``Flickr8k.token.txt`` with ``name.jpg#k<TAB>caption`` lines, and the
  split lists ``Flickr_8k.{train,dev,test}Images.txt`` (6,000/1,000/1,000 images; dev is
  the val split).
* ``kaggle``, the Kaggle copy's: ``Images/`` and a ``captions.txt`` CSV (``image,caption``).
  It lacks the split lists: when ``root`` has none, a seeded shuffle of the sorted captioned
  names gives 6,000 train and 1,000 val images and the rest test (logged).

The real files' quirks are handled by :mod:`glimpse.data.formats.caption_files` (the
``2258277193_586949ec62.jpg.1`` key, trailing spaces) and :mod:`glimpse.data.text.word_tokenizer`
(the ``" ."`` tokens); 92 captioned images are in no split list and are not used.

``download=True`` fetches what ``root`` lacks of the official layout from the release's
mirror (:data:`RELEASE_URL`), checks the published md5s (:data:`PUBLISHED_MD5`), extracts the
archives into a temporary folder inside ``root`` (without the ``__MACOSX`` resource forks) and
renames the finished folder and files into place, so an interrupted run leaves nothing under
the final names; the archives are deleted once extracted.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from glimpse.data.captions.datamodule import CaptionDataModule
from glimpse.data.captions.splits import SplitSource, image_files
from glimpse.data.download import download_file, extract_into
from glimpse.data.formats.caption_files import (
    read_flickr8k_tokens,
    read_kaggle_captions,
    read_split_list,
)
from glimpse.errors import ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)

TOKEN_FILE = "Flickr8k.token.txt"
#: The official layout's image folder: the release's misspelt name first.
IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
KAGGLE_CAPTIONS = "captions.txt"
KAGGLE_IMAGES = "Images"
#: Images of the seeded split of a layout without split lists (the release's sizes); test
#: takes the rest.
SEEDED_SPLIT = {"train": 6000, "val": 1000}

#: Jason Brownlee's GitHub release of the two official archives, which most tutorials
#: download (the University of Illinois form that first distributed them is gone).
RELEASE_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
IMAGES_ARCHIVE = "Flickr8k_Dataset.zip"
TEXT_ARCHIVE = "Flickr8k_text.zip"
#: The archives' md5s as published by two independent downloaders of this release: the R
#: torchvision package (mlverse/torchvision, ``R/dataset-flickr.R``) and pytorch-cpp
#: (prabhuomkar/pytorch-cpp, ``cmake/fetch_flickr8k.cmake``). The images archive is about
#: 1 GB, the text archive about 2.2 MB.
PUBLISHED_MD5 = {
    IMAGES_ARCHIVE: "f18a1e2920de5bd84dae7cf08ec78978",
    TEXT_ARCHIVE: "bf6c1abcb8e4a833b7f922104de18627",
}
RESOURCE_FORKS = "__MACOSX"


def seeded_split(names: list[str], seed: int) -> dict[str, list[str]]:
    """``names`` sorted, shuffled with ``seed``, and cut into :data:`SEEDED_SPLIT` sizes."""
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    train, val = SEEDED_SPLIT["train"], SEEDED_SPLIT["val"]
    return {
        "train": shuffled[:train],
        "val": shuffled[train : train + val],
        "test": shuffled[train + val :],
    }


def _found(tree: Path, name: str) -> Path | None:
    """The shallowest path named ``name`` under ``tree``, outside ``__MACOSX``."""
    hits = [p for p in tree.rglob(name) if RESOURCE_FORKS not in p.relative_to(tree).parts]
    return min(hits, key=lambda p: len(p.parts)) if hits else None


def release_contents(archive: Path) -> Callable[[Path], list[tuple[Path, str]]]:
    """What of an extracted official archive goes into ``root``: the images archive's image
    folder, or the text archive's ``.txt`` files, the token file last (it marks a finished
    layout). Raises :class:`~glimpse.errors.DataError` naming ``archive`` when it holds
    neither."""

    def select(tree: Path) -> list[tuple[Path, str]]:
        folder = next(filter(None, (_found(tree, d) for d in IMAGE_DIRS[:2])), None)
        if folder is not None:
            return [(folder, folder.name)]
        token = _found(tree, TOKEN_FILE)
        if token is None:
            raise DataError(
                f"{archive} holds neither a {IMAGE_DIRS[0]} folder nor {TOKEN_FILE}; is it a "
                "Flickr8k release archive?"
            )
        texts = sorted(token.parent.glob("*.txt"), key=lambda p: p.name == TOKEN_FILE)
        return [(text, text.name) for text in texts]

    return select


class Flickr8kDataModule(CaptionDataModule):
    """Flickr8k in the official or the Kaggle layout (see the module docstring).

    Args:
        root: the dataset's folder (downloaded into when ``download``).
        layout: ``official``, ``kaggle`` or ``auto`` (official when ``root`` holds the token
            file, Kaggle when it holds ``captions.txt``).
        download: fetch the official archives when ``root`` lacks them.
        base_url: where the archives are downloaded from (a mirror); None is
            :data:`RELEASE_URL`.
        md5: archive name -> expected md5, replacing :data:`PUBLISHED_MD5` (for a mirror).
        split_seed: the seed of the split made when ``root`` has no split lists.
        min_word_freq: see :class:`~glimpse.data.captions.datamodule.CaptionDataModule`; 5 is the
            usual Flickr8k choice.
        **kwargs: any other argument of
            :class:`~glimpse.data.captions.datamodule.CaptionDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike = "data/flickr8k",
        layout: Literal["auto", "official", "kaggle"] = "auto",
        download: bool = False,
        base_url: str | None = None,
        md5: Mapping[str, str] | None = None,
        split_seed: int = 0,
        min_word_freq: int = 5,
        **kwargs,
    ) -> None:
        if layout not in ("auto", "official", "kaggle"):
            raise ConfigError(f"data.layout={layout!r} must be auto, official or kaggle.")
        super().__init__(root=root, min_word_freq=min_word_freq, **kwargs)
        self.layout, self.download, self.split_seed = layout, download, split_seed
        self.base_url = (base_url or RELEASE_URL).rstrip("/") + "/"
        self.md5 = {**PUBLISHED_MD5, **(md5 or {})}
        self.found_layout: str | None = None

    def image_dir(self) -> Path | None:
        """The official layout's image folder, when there is one."""
        return next((self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()), None)

    def detect_layout(self) -> str | None:
        """``official`` or ``kaggle`` as ``layout`` says or ``root`` holds; None when ``root``
        holds neither (yet)."""
        official = (self.root / TOKEN_FILE).is_file() and self.image_dir() is not None
        kaggle = (self.root / KAGGLE_CAPTIONS).is_file() and (self.root / KAGGLE_IMAGES).is_dir()
        if self.layout == "official":
            return "official" if official else None
        if self.layout == "kaggle":
            return "kaggle" if kaggle else None
        return "official" if official else "kaggle" if kaggle else None

    def prepare_data(self) -> None:
        """With ``download``, fetch and extract the official archives ``root`` lacks."""
        if not self.download or self.layout == "kaggle" or self.detect_layout() is not None:
            return
        wanted = {
            IMAGES_ARCHIVE: self.image_dir() is None,
            TEXT_ARCHIVE: not all(
                (self.root / f).is_file() for f in (TOKEN_FILE, *SPLIT_FILES.values())
            ),
        }
        for archive, needed in wanted.items():
            if not needed:
                continue
            url, path = self.base_url + archive, self.root / archive
            log.info("Downloading %s to %s", url, path)
            download_file(url, path, md5=self.md5.get(archive))
            log.info("Extracting %s into %s", path, self.root)
            extract_into(path, self.root, release_contents(path))
            path.unlink()

    def metadata(self) -> dict:
        return {**super().metadata(), "layout": self.found_layout, "split_seed": self.split_seed}

    def read_sources(self) -> dict[str, SplitSource]:
        layout = self.detect_layout()
        if layout is None:
            wanted = {
                "official": f"{TOKEN_FILE} and {IMAGE_DIRS[0]}/ (or {KAGGLE_IMAGES}/)",
                "kaggle": f"{KAGGLE_CAPTIONS} and {KAGGLE_IMAGES}/",
                "auto": f"{TOKEN_FILE} and {IMAGE_DIRS[0]}/, or {KAGGLE_CAPTIONS} and "
                f"{KAGGLE_IMAGES}/",
            }[self.layout]
            raise MissingFileError(
                f"data.root={self.root} does not hold Flickr8k's {wanted}; set "
                "data.download=true to download the release, or point data.root at a copy."
            )
        self.found_layout = layout
        if layout == "official":
            captions_file, images = self.root / TOKEN_FILE, self.image_dir()
            captions = read_flickr8k_tokens(captions_file)
        else:
            captions_file, images = self.root / KAGGLE_CAPTIONS, self.root / KAGGLE_IMAGES
            captions = read_kaggle_captions(captions_file)
        files = image_files(images)
        lists = {split: self.root / name for split, name in SPLIT_FILES.items()}
        present = [split for split, path in lists.items() if path.is_file()]
        if present and len(present) < len(lists):
            absent = ", ".join(str(p) for p in lists.values() if not p.is_file())
            raise MissingFileError(f"{absent} missing beside the other split lists in {self.root}.")
        if present:
            names = {split: read_split_list(path) for split, path in lists.items()}
            listed_in = {split: str(path) for split, path in lists.items()}
        else:
            names = seeded_split(list(captions), self.split_seed)
            listed_in = {split: f"the seeded split of {captions_file}" for split in names}
            log.info(
                "%s has no split lists: split the %d captioned images with seed %d into %s",
                self.root,
                len(captions),
                self.split_seed,
                ", ".join(f"{len(v)} {k}" for k, v in names.items()),
            )
        unlisted = len(set(captions) - {n for split in names.values() for n in split})
        if unlisted:
            log.info("%d captioned images of %s are in no split", unlisted, captions_file)
        return {
            split: SplitSource(
                {n: captions.get(n, []) for n in names[split]}, files, listed_in[split], str(images)
            )
            for split in names
        }
