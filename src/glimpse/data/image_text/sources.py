"""Where the pairs of :class:`~glimpse.data.image_text.datamodule.ImageTextDataModule` come from:
one small class per format, each giving every split's dataset of (image, caption) pairs.

* :class:`PairFiles`: a CSV, TSV or JSONL pairs file (split by image with a seed), or a folder
  of ``train``, ``val`` and ``test`` files (:mod:`glimpse.data.formats.pair_files`).
* :class:`Flickr8kPairs`, :class:`CocoPairs`: the captioning datasets, read by their caption
  datamodules' parsing (layouts, split lists, downloads), every caption a pair.
* :class:`ShardPairs`: WebDataset tar shards, streamed
  (:class:`~glimpse.data.formats.tar_shards.TarShardPairs`).

The first three list their images with captions (:class:`ListedPairs`): listed images without
a file are counted and named in a warning and left out (``skip_missing``), or raise; an image
in two splits raises. The synthetic shapes pairs are a :class:`PairFiles` written first
(:class:`~glimpse.data.synthetic.datamodules.ShapesPairs`).
"""

from __future__ import annotations

import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from glimpse.data.base import SPLITS
from glimpse.data.captions.coco_captions import CocoCaptionsDataModule
from glimpse.data.captions.datamodule import CaptionDataModule
from glimpse.data.captions.flickr8k import Flickr8kDataModule
from glimpse.data.captions.splits import CaptionSplit, ListedSplits, SplitSource
from glimpse.data.formats.pair_files import read_pair_file, seeded_split
from glimpse.data.formats.tar_shards import (
    IMAGE_KEYS,
    TEXT_KEYS,
    TarShardPairs,
    check_local_shards,
    expand_shards,
    read_captions,
)
from glimpse.data.images.decode import open_rgb
from glimpse.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

CAPTION_SAMPLING = ("random", "all")


@dataclass(frozen=True)
class Reading:
    """The datamodule's settings that a source reads its splits by.

    Attributes:
        image_size: the side of the images the model receives (the shapes set is written at it).
        val_fraction, test_fraction, split_seed: the seeded split of a single pairs file;
            ``split_seed`` is also Flickr8k's split seed and the shard shuffles' seed.
        caption_sampling: ``random`` (each training image once per epoch with one of its
            captions) or ``all`` (every training pair once).
        verify, skip_corrupt: decode every listed image once at setup, raising on an
            unreadable one or, with ``skip_corrupt``, leaving it out with a warning.
        skip_missing: leave out listed images without a file (counted) instead of raising.
        num_workers: verification threads.
        batch_size: training pairs per batch; a shard epoch is a whole number of them.
    """

    image_size: int = 224
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    caption_sampling: str = "random"
    verify: bool = True
    skip_corrupt: bool = False
    skip_missing: bool = True
    num_workers: int = 0
    batch_size: int = 1


class PairSource(ABC):
    """A format's pairs: what :class:`~glimpse.data.image_text.datamodule.ImageTextDataModule`
    asks of each. A subclass's keyword-only constructor arguments are the format's
    ``data.source`` options."""

    def __init__(self, path: Any, reading: Reading) -> None:
        self.path, self.reading = path, reading

    def prepare(self) -> None:
        """Download or write what the source reads (once, on one process); nothing by default."""
        return None

    @abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, how much it holds, for the spec."""

    @abstractmethod
    def train_captions(self) -> list[str]:
        """The training captions a tokenizer is trained on."""

    @abstractmethod
    def dataset(self, split: str, transform: v2.Transform) -> Dataset:
        """Split ``split``'s ``(image (3, H, W), caption, image index)`` samples."""

    def check_processes(self, world_size: int) -> None:
        """Raise :class:`~glimpse.errors.ConfigError` when training on ``world_size`` processes
        cannot give each the same number of batches; every listed source can."""
        return None

    def metadata(self) -> dict[str, Any]:
        """What the spec's metadata keeps of the source besides its counts."""
        return {}


def source_options(source: Any) -> list[str]:
    """The ``data.source`` options a source class (or a partial of one) takes: its keyword-only
    constructor arguments."""
    parameters = inspect.signature(source).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "format"]


class PairDataset(Dataset):
    """A split's pairs, read from image files.

    With ``per_image`` an item is an image with one of its captions drawn at random; else an
    item is one (image, caption) pair. Items are ``(image (3, H, W), caption, image index)``.
    """

    def __init__(self, split: CaptionSplit, transform: v2.Transform, per_image: bool) -> None:
        self.paths, self.captions, self.transform = split.paths, split.captions, transform
        self.per_image = per_image
        per = torch.tensor([len(c) for c in split.captions])
        self.pair_image = torch.repeat_interleave(torch.arange(len(per)), per)
        self.first = torch.cat([torch.zeros(1, dtype=torch.long), per.cumsum(0)])

    def __len__(self) -> int:
        return len(self.paths) if self.per_image else len(self.pair_image)

    def __getitem__(self, index: int) -> tuple[Tensor, str, int]:
        if self.per_image:
            image, captions = index, self.captions[index]
            caption = captions[int(torch.randint(len(captions), ()))]
        else:
            image = int(self.pair_image[index])
            caption = self.captions[image][index - int(self.first[image])]
        return self.transform(open_rgb(self.paths[image])), caption, image


class ListedPairs(PairSource):
    """A source whose splits list images with their captions (:class:`SplitSource`); a subclass
    says what each split lists (:meth:`read_sources`)."""

    def __init__(self, path: Any, reading: Reading) -> None:
        super().__init__(path, reading)
        self.splits = ListedSplits(self.read_sources, reading.skip_missing)

    @abstractmethod
    def read_sources(self) -> dict[str, SplitSource]:
        """Each split's listed images, captions and files; a split evaluated on another's
        images is that split's very object."""

    def split(self, name: str) -> CaptionSplit:
        """The split's captioned images that have a file (indexed once)."""
        return self.splits.split(name)

    def counts(self) -> dict[str, dict[str, int]]:
        counts = {s: self.split(s).counts() for s in SPLITS}
        for split, c in counts.items():
            log.info("%s split: %d images with %d captions", split, c["images"], c["captions"])
        return counts

    def train_captions(self) -> list[str]:
        return [c for caps in self.split("train").captions for c in caps]

    def dataset(self, split: str, transform: v2.Transform) -> PairDataset:
        """Training serves each image once per epoch with a random caption (``caption_sampling:
        random``) or every pair once (``all``); evaluation serves every pair."""
        r = self.reading
        verified = self.splits.verified(split, r.verify, r.num_workers, r.skip_corrupt)
        per_image = split == "train" and r.caption_sampling == "random"
        return PairDataset(verified, transform, per_image)


def file_sources(
    captions: dict[str, list[str]], image_root: Path, listed_in: str, names: Sequence[str]
) -> SplitSource:
    """The split of the images ``names`` of ``captions``, with their files under
    ``image_root`` (absolute paths kept)."""
    paths = {name: image_root / name for name in names}
    return SplitSource(
        {name: captions[name] for name in names},
        {name: p for name, p in paths.items() if p.is_file()},
        listed_in,
        str(image_root),
    )


class PairFiles(ListedPairs):
    """A pairs file, split by image with ``split_seed`` (never separating an image's captions:
    ``val_fraction`` and ``test_fraction`` of the images, at least one val image; with no test
    images the test split is val), or a folder holding ``train.<ext>``, ``val.<ext>`` and
    optionally ``test.<ext>`` (else test is val).

    Args:
        path: the file or the folder.
        format: ``csv``, ``tsv`` or ``jsonl``.
        image_column, caption_column: the header's (or JSON keys') names of the image path and
            the caption.
        image_root: what image paths are relative to; None is the file's folder.
    """

    FORMATS = ("csv", "tsv", "jsonl")

    def __init__(
        self,
        path: str | os.PathLike,
        reading: Reading,
        *,
        format: str = "csv",
        image_column: str = "image",
        caption_column: str = "caption",
        image_root: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(Path(path), reading)
        self.format = format
        folder = self.path if self.path.is_dir() else self.path.parent
        self.image_root = Path(image_root) if image_root else folder
        self.read = partial(
            read_pair_file, format=format, image_column=image_column, caption_column=caption_column
        )

    def read_sources(self) -> dict[str, SplitSource]:
        if self.path.is_file():
            return self._seeded_sources()
        files = {s: self.path / f"{s}.{self.format}" for s in SPLITS}
        if not (files["train"].is_file() and files["val"].is_file()):
            raise MissingFileError(
                f"data.path={self.path} is neither a {self.format} pairs file nor a folder "
                f"holding train.{self.format} and val.{self.format}."
            )
        sources = {}
        for split, file in files.items():
            if split == "test" and not file.is_file():
                sources[split] = sources["val"]
                continue
            captions = self.read(file)
            sources[split] = file_sources(captions, self.image_root, str(file), list(captions))
        return sources

    def _seeded_sources(self) -> dict[str, SplitSource]:
        captions = self.read(self.path)
        r = self.reading
        names = seeded_split(list(captions), r.val_fraction, r.test_fraction, r.split_seed)
        listed = f"{self.path} (seeded split)"
        sources = {s: file_sources(captions, self.image_root, listed, names[s]) for s in SPLITS}
        if not names["test"]:
            sources["test"] = sources["val"]
        return sources


class CaptionedPairs(ListedPairs):
    """The pairs of a captioning dataset, every caption a pair, read (and with ``download``
    fetched) by its caption datamodule's parsing."""

    def __init__(self, captions: CaptionDataModule, reading: Reading) -> None:
        self.captions = captions
        super().__init__(captions.root, reading)

    def prepare(self) -> None:
        self.captions.prepare_data()

    def read_sources(self) -> dict[str, SplitSource]:
        return self.captions.read_sources()


class Flickr8kPairs(CaptionedPairs):
    """Flickr8k's folder as :class:`~glimpse.data.captions.flickr8k.Flickr8kDataModule` reads
    it (its options are that datamodule's; the seeded split of a copy without split lists uses
    ``split_seed``)."""

    def __init__(
        self,
        path: str | os.PathLike,
        reading: Reading,
        *,
        layout: str = "auto",
        download: bool = False,
        base_url: str | None = None,
        md5: Mapping[str, str] | None = None,
    ) -> None:
        flickr8k = Flickr8kDataModule(
            path, layout, download, base_url, md5, reading.split_seed, verify=False
        )
        super().__init__(flickr8k, reading)


class CocoPairs(CaptionedPairs):
    """COCO captions on the 2017 images as
    :class:`~glimpse.data.captions.coco_captions.CocoCaptionsDataModule` reads them (its
    options are that datamodule's)."""

    def __init__(
        self,
        path: str | os.PathLike,
        reading: Reading,
        *,
        split: str = "official",
        karpathy_file: str | os.PathLike | None = None,
        download: bool = False,
        base_url: str | None = None,
        md5: Mapping[str, str] | None = None,
    ) -> None:
        coco = CocoCaptionsDataModule(
            path, split, karpathy_file, download, base_url, md5, verify=False
        )
        super().__init__(coco, reading)


class ShardPairs(PairSource):
    """WebDataset tar shards: ``path`` maps ``train``, ``val`` and optionally ``test`` (else
    val's) to shard patterns or URLs, streamed by
    :class:`~glimpse.data.formats.tar_shards.TarShardPairs`.

    Args:
        shuffle_buffer: samples shuffled among, per worker.
        samples_per_epoch: None reads every training shard once per epoch (one process only);
            a number draws shards with replacement, so every process reads as many batches.
        tokenizer_samples: the training captions a trained tokenizer learns from.
        image_keys, text_keys: the record keys tried for the image and the caption.
        timeout: seconds to wait for a shard's host.
        skip_bad: leave out (logged) samples without image or caption, or undecodable.
    """

    def __init__(
        self,
        path: Mapping[str, Any],
        reading: Reading,
        *,
        shuffle_buffer: int = 1000,
        samples_per_epoch: int | None = None,
        tokenizer_samples: int = 100_000,
        image_keys: Sequence[str] = IMAGE_KEYS,
        text_keys: Sequence[str] = TEXT_KEYS,
        timeout: float = 60.0,
        skip_bad: bool = False,
    ) -> None:
        if not isinstance(path, Mapping) or not path.get("train") or not path.get("val"):
            raise ConfigError(
                "data.path for format webdataset must map train and val (and optionally test) "
                f"to shard patterns or URLs, not {path!r}."
            )
        super().__init__(dict(path), reading)
        self.shuffle_buffer, self.samples_per_epoch = shuffle_buffer, samples_per_epoch
        self.tokenizer_samples = tokenizer_samples
        self.image_keys, self.text_keys = list(image_keys), list(text_keys)
        self.timeout, self.skip_bad = timeout, skip_bad
        self._shards: dict[str, list[str]] | None = None

    def shards(self) -> dict[str, list[str]]:
        """Each split's shards (test: val's when it has none); local ones must exist."""
        if self._shards is None:
            shards = {s: expand_shards(self.path[s]) for s in SPLITS if self.path.get(s)}
            shards.setdefault("test", shards["val"])
            for split, urls in shards.items():
                where = self.path.get(split) or self.path["val"]
                check_local_shards(urls, f"the {split} split ({where})")
            self._shards = shards
        return self._shards

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"shards": len(urls)} for s, urls in self.shards().items()}

    def train_captions(self) -> list[str]:
        return read_captions(
            self.shards()["train"], self.tokenizer_samples, self.text_keys, self.timeout
        )

    def dataset(self, split: str, transform: v2.Transform) -> TarShardPairs:
        """Training shuffles the shards per epoch and deals them out by rank and worker;
        evaluation deals out samples, so every process scores its share once."""
        train = split == "train"
        return TarShardPairs(
            self.shards()[split],
            transform,
            shuffle=train,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.reading.split_seed,
            split_by="shards" if train else "samples",
            samples_per_epoch=self.samples_per_epoch if train else None,
            multiple_of=self.reading.batch_size,
            image_keys=self.image_keys,
            text_keys=self.text_keys,
            timeout=self.timeout,
            skip_bad=self.skip_bad,
        )

    def check_processes(self, world_size: int) -> None:
        if world_size > 1 and not self.samples_per_epoch:
            raise ConfigError(
                f"Training on {world_size} processes from shards needs "
                "data.source.samples_per_epoch, so that every process reads the same number of "
                "batches (each shard once would give them different numbers)."
            )
