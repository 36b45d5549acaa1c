"""The splits of a dataset whose images are listed with their captions (Flickr8k, COCO captions,
pair files): what each split lists, which of its images have a file, and which decode.

A reader says per split which images the split lists, with their captions, and which image
files exist (:class:`SplitSource`); :class:`ListedSplits` then reads them once, checks that no
image is in two splits, and indexes each split once (:func:`index_split`): the listed images
that have no file or no caption are left out, counted and warned about once, and a split that
ends up empty raises :class:`~glimpse.errors.DataError` naming the list and folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from glimpse.data.images.decode import SHOWN_BAD_FILES, readable_images
from glimpse.errors import DataError, MissingFileError

log = logging.getLogger(__name__)


class SplitSource(NamedTuple):
    """What a reader finds for one split.

    Attributes:
        captions: every image the split lists, by file name, with its captions (an empty
            list for a listed image that has none).
        files: the image files found, by name (it may hold images of other splits).
        listed_in: what lists the split's images (a file), for messages.
        image_dir: where the images are looked for, for messages.
    """

    captions: dict[str, list[str]]
    files: dict[str, Path]
    listed_in: str
    image_dir: str


@dataclass(frozen=True)
class CaptionSplit:
    """One split's captioned images that have a file, in listing order, and what was left
    out: ``missing`` listed images without a file, ``uncaptioned`` ones without captions."""

    names: tuple[str, ...]
    paths: tuple[Path, ...]
    captions: tuple[tuple[str, ...], ...]
    missing: int = 0
    uncaptioned: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "images": len(self.names),
            "captions": sum(map(len, self.captions)),
            "missing_images": self.missing,
            "uncaptioned_images": self.uncaptioned,
        }


def readable_split(
    split: CaptionSplit, name: str, num_workers: int, skip_corrupt: bool
) -> CaptionSplit:
    """``split`` with every image decoded once: an unreadable one raises, or with
    ``skip_corrupt`` is left out with its captions (counted in a warning)
    (:func:`~glimpse.data.images.decode.readable_images`)."""
    keep = readable_images(split.paths, num_workers, skip_corrupt, name)
    if len(keep) == len(split.paths):
        return split
    return CaptionSplit(
        names=tuple(split.names[i] for i in keep),
        paths=tuple(split.paths[i] for i in keep),
        captions=tuple(split.captions[i] for i in keep),
        missing=split.missing,
        uncaptioned=split.uncaptioned,
    )


def image_files(folder: Path) -> dict[str, Path]:
    """The files directly in ``folder`` by name (hidden files left out); empty when it does
    not exist."""
    if not folder.is_dir():
        return {}
    return {
        e.name: Path(e.path)
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".")
    }


def index_split(split: str, source: SplitSource) -> CaptionSplit:
    """Keep the listed images that have captions and a file; warn once with the counts of
    those left out. Raises :class:`~glimpse.errors.DataError` naming the list and folder when
    none is left."""
    kept = [n for n, caps in source.captions.items() if caps and n in source.files]
    missing = [n for n, caps in source.captions.items() if caps and n not in source.files]
    uncaptioned = [n for n, caps in source.captions.items() if not caps]
    if missing or uncaptioned:
        log.warning(
            "%s split: %d of the %d images listed in %s have no file in %s (their %d captions "
            "are left out) and %d have no caption; e.g. %s",
            split,
            len(missing),
            len(source.captions),
            source.listed_in,
            source.image_dir,
            sum(len(source.captions[n]) for n in missing),
            len(uncaptioned),
            ", ".join((missing + uncaptioned)[:SHOWN_BAD_FILES]),
        )
    if not kept:
        raise DataError(
            f"The {split} split is empty: none of the {len(source.captions)} images listed in "
            f"{source.listed_in} has both captions and a file in {source.image_dir}; check "
            "data.root."
        )
    return CaptionSplit(
        names=tuple(kept),
        paths=tuple(source.files[n] for n in kept),
        captions=tuple(tuple(source.captions[n]) for n in kept),
        missing=len(missing),
        uncaptioned=len(uncaptioned),
    )


def check_files(source: SplitSource) -> None:
    """Raise :class:`~glimpse.errors.MissingFileError` naming the listed, captioned images that
    have no file."""
    missing = [n for n, caps in source.captions.items() if caps and n not in source.files]
    if missing:
        raise MissingFileError(
            f"{len(missing)} of the {len(source.captions)} images listed in "
            f"{source.listed_in} have no file in {source.image_dir}, e.g. "
            f"{', '.join(missing[:SHOWN_BAD_FILES])}; fix the paths or set "
            "data.skip_missing=true to leave them out."
        )


def check_disjoint(sources: dict[str, SplitSource]) -> None:
    """Raise :class:`~glimpse.errors.DataError` naming an image that two splits list (a split
    that reads the same source as another, like COCO's test = val, is not compared with it)."""
    seen: dict[str, str] = {}
    checked: list[SplitSource] = []
    for split, source in sources.items():
        if any(source is other for other in checked):
            continue
        checked.append(source)
        for name in source.captions:
            if name in seen:
                raise DataError(
                    f"{name} is listed in both the {seen[name]} and the {split} split "
                    f"({source.listed_in}); an image may be in one split only."
                )
            seen[name] = split


class ListedSplits:
    """The splits that ``read`` returns, read once and checked disjoint, each indexed once (a
    split read from the same :class:`SplitSource` object as another, like COCO's test = val,
    shares its index).

    Args:
        read: every split's :class:`SplitSource`, by name.
        skip_missing: leave out (counted in a warning) listed images without a file; False
            raises :class:`~glimpse.errors.MissingFileError` naming them.
    """

    def __init__(
        self, read: Callable[[], dict[str, SplitSource]], skip_missing: bool = True
    ) -> None:
        self.read, self.skip_missing = read, skip_missing
        self._sources: dict[str, SplitSource] | None = None
        self._splits: dict[str, CaptionSplit] = {}

    def sources(self) -> dict[str, SplitSource]:
        """Each split's listed images, their captions and files (read once)."""
        if self._sources is None:
            sources = self.read()
            check_disjoint(sources)
            self._sources = sources
        return self._sources

    def split(self, name: str) -> CaptionSplit:
        """The split's captioned images that have a file (indexed once, warning once)."""
        if name not in self._splits:
            source = self.sources()[name]
            same = [s for s in self._splits if self.sources()[s] is source]
            if same:
                self._splits[name] = self._splits[same[0]]
            else:
                if not self.skip_missing:
                    check_files(source)
                self._splits[name] = index_split(name, source)
        return self._splits[name]

    def shares_source(self, name: str, other: str) -> bool:
        """Whether splits ``name`` and ``other`` are read from the same source."""
        return self.sources()[name] is self.sources()[other]

    def verified(
        self, name: str, verify: bool, num_workers: int, skip_corrupt: bool
    ) -> CaptionSplit:
        """The split; with ``verify`` every image decoded once, an unreadable one raising or,
        with ``skip_corrupt``, left out (:func:`readable_split`)."""
        split = self.split(name)
        return readable_split(split, name, num_workers, skip_corrupt) if verify else split
