"""Images with reference captions as LightningDataModules yielding :class:`CaptionedImages`.

:class:`CaptionDataModule` is the common base: a subclass only says, per split, which images
the split lists, with their captions, and which image files exist (:meth:`read_sources`).
The base then

* leaves out, counts and warns about (once per split) the listed images that have no file or
  no caption, and raises a ValueError naming the list and folder when a split ends up empty
  or an image is in two splits;
* builds the :class:`~glimpse.data.text.word_tokenizer.WordTokenizer` from the training captions
  only (words seen at least ``min_word_freq`` times) and the DataSpec that keeps it;
* serves training batches of (image, one caption) pairs, every caption of every training
  image once per epoch, and evaluation batches of one image with all its references;
* pads each batch's captions to its longest caption, without truncating any
  (:func:`collate_captions`);
* optionally serves cached encoder grids instead of images
  (:mod:`glimpse.data.captions.feature_cache`).

Images are resized (shorter side to ``image_size / crop_ratio``) and centre-cropped in
training too: a random crop would cut out what a caption names. A horizontal flip is
optional and off by default, as captions say "left" and "right".

The datasets: :class:`~glimpse.data.captions.flickr8k.Flickr8kDataModule`,
:class:`~glimpse.data.captions.coco_captions.CocoCaptionsDataModule` and the synthetic
:class:`~glimpse.data.synthetic.datamodules.ShapesCaptionsDataModule`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from glimpse.batches import CAPTIONED_IMAGES, CaptionedImages
from glimpse.data.captions.feature_cache import cache_digest, cached_features
from glimpse.data.images.decode import SHOWN_BAD_FILES, open_rgb, readable_images
from glimpse.data.images.image_folder import SPLITS, STAGE_SPLITS
from glimpse.data.images.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from glimpse.data.spec import DataSpec
from glimpse.data.text.word_tokenizer import WordTokenizer, tokenize

log = logging.getLogger(__name__)


class SplitSource(NamedTuple):
    """What a subclass reads for one split.

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
    those left out. Raises ValueError naming the list and folder when none is left."""
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
        raise ValueError(
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


def check_disjoint(sources: dict[str, SplitSource]) -> None:
    """Raise ValueError naming an image that two splits list (a split that reads the same
    source as another, like COCO's test = val, is not compared with it)."""
    seen: dict[str, str] = {}
    checked: list[SplitSource] = []
    for split, source in sources.items():
        if any(source is other for other in checked):
            continue
        checked.append(source)
        for name in source.captions:
            if name in seen:
                raise ValueError(
                    f"{name} is listed in both the {seen[name]} and the {split} split "
                    f"({source.listed_in}); an image may be in one split only."
                )
            seen[name] = split


class CaptionSample(NamedTuple):
    """One dataset item: an image ``(3, H, W)`` (or its cached grid ``(N, D)``), caption id
    sequences (one in training, all of the image's in evaluation), the image's references
    and its file name."""

    image: Tensor
    captions: tuple[Tensor, ...]
    references: tuple[str, ...]
    name: str


class CaptionDataset(Dataset):
    """A split's images and encoded captions: with ``pairs``, one item per (image, caption),
    else one per image with every caption.

    ``features``, when set, is the ``(M, N, D)`` tensor of the images' encoder grids, served
    instead of the decoded images.
    """

    def __init__(
        self, split: CaptionSplit, tokenizer: WordTokenizer, transform: v2.Transform, pairs: bool
    ) -> None:
        self.split, self.transform, self.pairs = split, transform, pairs
        self.names, self.paths = split.names, split.paths
        self.references = tuple(
            tuple(" ".join(tokenize(c)) for c in caps) for caps in split.captions
        )
        encoded = [tokenizer.encode(c) for caps in self.references for c in caps]
        self.ids = torch.tensor([i for ids in encoded for i in ids], dtype=torch.int32)
        self.offsets = torch.tensor([0, *map(len, encoded)]).cumsum(0)
        per_image = torch.tensor([len(caps) for caps in split.captions])
        self.first = torch.cat([torch.zeros(1, dtype=torch.long), per_image.cumsum(0)])
        self.caption_image = torch.repeat_interleave(torch.arange(len(self.names)), per_image)
        self.features: Tensor | None = None

    def __len__(self) -> int:
        return len(self.caption_image) if self.pairs else len(self.names)

    def caption(self, k: int) -> Tensor:
        """Caption ``k``'s ids, ``<start> .. <end>``, int64."""
        return self.ids[self.offsets[k] : self.offsets[k + 1]].long()

    def image(self, i: int) -> Tensor:
        if self.features is not None:
            return self.features[i]
        return self.transform(open_rgb(self.paths[i]))

    def __getitem__(self, index: int) -> CaptionSample:
        if self.pairs:
            i = int(self.caption_image[index])
            captions = (self.caption(index),)
        else:
            i = index
            captions = tuple(self.caption(k) for k in range(self.first[i], self.first[i + 1]))
        return CaptionSample(self.image(i), captions, self.references[i], self.names[i])


def collate_captions(samples: Sequence[CaptionSample]) -> CaptionedImages:
    """Batch samples: images (or grids) stacked as float32, captions padded with ``<pad>`` (0)
    to the longest one, ``lengths`` and ``caption_image`` saying which image each belongs to."""
    captions = [c for s in samples for c in s.captions]
    per_image = torch.tensor([len(s.captions) for s in samples])
    return CaptionedImages(
        images=torch.stack([s.image for s in samples]).float(),
        captions=pad_sequence(captions, batch_first=True, padding_value=0),
        lengths=torch.tensor([len(c) for c in captions], dtype=torch.long),
        caption_image=torch.repeat_interleave(torch.arange(len(samples)), per_image),
        references=tuple(s.references for s in samples),
        names=tuple(s.name for s in samples),
    )


def display_transform(image_size: int, crop_ratio: float) -> v2.Compose:
    """:func:`~glimpse.data.images.transforms.eval_transform` without the normalisation: ``(3, H,
    W)`` float32 in [0, 1], for figures."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(int(image_size / crop_ratio), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class CaptionDataModule(L.LightningDataModule):
    """The base of the captioning datamodules (see the module docstring).

    Subclasses implement :meth:`read_sources` (and :meth:`prepare_data` to fetch or write
    their files) and extend :meth:`metadata`.

    Args:
        root: the dataset's folder.
        image_size: the side of the square images the model receives.
        batch_size: training (image, caption) pairs per batch.
        eval_batch_size: images per validation and test batch (each with all its captions);
            None uses ``batch_size``.
        num_workers: DataLoader worker processes (and verification threads).
        min_word_freq: training-caption occurrences a word needs to be in the vocabulary;
            rarer words map to ``<unk>``.
        hflip: probability of a horizontal flip in training (captions naming left and right
            are then wrong for the flipped image).
        crop_ratio: images are resized so their shorter side is ``image_size / crop_ratio``,
            then centre-cropped.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        verify: decode every image of a split once at setup, so that a corrupt file is
            reported before training.
        skip_corrupt: leave unreadable images out (counted in a warning) instead of failing;
            needs ``verify``.
        pin_memory: page-locked batches; None pins them when training on a CUDA device.
        cache_features: serve the encoder's grids ``(N, D)`` instead of images, computed
            once per split with the task's frozen encoder (its ``feature_encoder()``) and
            cached under ``cache_dir``.
        cache_dir: where cached features are kept.
    """

    KIND = CAPTIONED_IMAGES

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        min_word_freq: int = 5,
        hflip: float = 0.0,
        crop_ratio: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        verify: bool = True,
        skip_corrupt: bool = False,
        pin_memory: bool | None = None,
        cache_features: bool = False,
        cache_dir: str | os.PathLike = "data/feature_cache",
    ) -> None:
        super().__init__()
        if skip_corrupt and not verify:
            raise ValueError("data.skip_corrupt=true needs data.verify=true to find the files.")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"data.mean={list(mean)} and data.std={list(std)} need 3 values.")
        if cache_features and hflip > 0:
            raise ValueError(
                f"data.cache_features=true caches each image's features once, so it cannot "
                f"serve flipped images; set data.hflip=0 (it is {hflip})."
            )
        if min_word_freq < 1:
            raise ValueError(f"data.min_word_freq={min_word_freq} must be at least 1.")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.min_word_freq = min_word_freq
        self.crop_ratio = crop_ratio
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.verify, self.skip_corrupt = verify, skip_corrupt
        self.pin_memory = pin_memory
        self.cache_features = cache_features
        self.cache_dir = Path(cache_dir)
        evaluation = eval_transform(self.image_size, crop_ratio, self.mean, self.std)
        self.transforms = {
            "train": v2.Compose([v2.RandomHorizontalFlip(hflip), evaluation])
            if hflip > 0
            else evaluation,
            "eval": evaluation,
        }
        self.datasets: dict[str, CaptionDataset] = {}
        self._sources: dict[str, SplitSource] | None = None
        self._splits: dict[str, CaptionSplit] = {}
        self._spec: DataSpec | None = None

    def read_sources(self) -> dict[str, SplitSource]:
        """Each of ``train``, ``val`` and ``test``'s listed images, captions and files; a split
        evaluated on another's images (COCO's test = val) is that split's very object."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """Provenance kept in the spec's metadata."""
        return {"root": str(self.root)}

    def sources(self) -> dict[str, SplitSource]:
        if self._sources is None:
            sources = self.read_sources()
            check_disjoint(sources)
            self._sources = sources
        return self._sources

    def split(self, name: str) -> CaptionSplit:
        """The split's captioned images that have a file (indexed once, warning once)."""
        if name not in self._splits:
            source = self.sources()[name]
            same = [s for s, other in self._splits.items() if self.sources()[s] is source]
            self._splits[name] = self._splits[same[0]] if same else index_split(name, source)
        return self._splits[name]

    def setup(self, stage: str | None = None) -> None:
        """Index every split and build the tokenizer and spec (once), then the datasets of
        the splits ``stage`` needs (all for None), verifying their images when ``verify``."""
        if self._spec is None:
            self._spec = self._build_spec()
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self.dataset(split)

    def _build_spec(self) -> DataSpec:
        splits = {name: self.split(name) for name in SPLITS}
        train = [c for caps in splits["train"].captions for c in caps]
        tokenizer = WordTokenizer.from_captions(train, self.min_word_freq)
        counts = {name: split.counts() for name, split in splits.items()}
        for name, c in counts.items():
            log.info("%s split: %d images with %d captions", name, c["images"], c["captions"])
        log.info(
            "Vocabulary of the training captions: %d tokens (words seen at least %d times)",
            len(tokenizer),
            self.min_word_freq,
        )
        return DataSpec(
            kind=CAPTIONED_IMAGES,
            vocab=tokenizer.words,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            metadata={
                **self.metadata(),
                "splits": counts,
                "images_missing": sum(c["missing_images"] for c in counts.values()),
                "min_word_freq": self.min_word_freq,
                "max_caption_words": max(len(tokenize(c)) for c in train),
            },
        )

    @property
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("Call prepare_data() and setup() before reading the spec.")
        return self._spec

    @property
    def tokenizer(self) -> WordTokenizer:
        """The vocabulary of the training captions."""
        return WordTokenizer(self.spec.vocab)

    def dataset(self, split: str) -> CaptionDataset:
        """The split's dataset, built (and verified) on first use; a split read from the same
        source as another (COCO's test = val) shares its dataset."""
        if split not in self.datasets:
            same = [
                s
                for s in self.datasets
                if s != "train" != split and self.sources()[s] is self.sources()[split]
            ]
            if same:
                self.datasets[split] = self.datasets[same[0]]
            else:
                self.datasets[split] = CaptionDataset(
                    self._verified(split),
                    self.tokenizer,
                    self.transforms["train" if split == "train" else "eval"],
                    pairs=split == "train",
                )
        return self.datasets[split]

    def _verified(self, name: str) -> CaptionSplit:
        """The split, its unreadable images raising or (``skip_corrupt``) left out."""
        split = self.split(name)
        return (
            readable_split(split, name, self.num_workers, self.skip_corrupt)
            if self.verify
            else split
        )

    def display_image(self, split: str, name: str) -> Tensor:
        """Image ``name`` of ``split`` as the model sees it but not normalised: ``(3, H, W)``
        float32 in [0, 1] (for figures when batches hold cached features)."""
        dataset = self.dataset(split)
        if name not in dataset.names:
            raise KeyError(f"{name} is not an image of the {split} split.")
        path = dataset.paths[dataset.names.index(name)]
        return display_transform(self.image_size, self.crop_ratio)(open_rgb(path))

    def feature_cache_path(self, split: str, key: str) -> Path:
        """Where ``split``'s grids from the encoder identified by ``key`` are cached."""
        digest = cache_digest(
            encoder=key,
            datamodule=type(self).__name__,
            root=str(self.root.resolve()),
            image_size=self.image_size,
            crop_ratio=self.crop_ratio,
            mean=self.mean,
            std=self.std,
            metadata=self.metadata(),
        )
        return self.cache_dir / digest / f"{split}.pt"

    def _attach_features(self, split: str) -> None:
        """Give ``split``'s dataset its cached grids, computing them on first use."""
        dataset = self.dataset(split)
        if dataset.features is not None:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        found = module.feature_encoder() if hasattr(module, "feature_encoder") else None
        if found is None:
            raise ValueError(
                "data.cache_features=true needs a task whose image encoder is frozen, but "
                f"{type(module).__name__} trains it (or has none), so its features cannot be "
                "cached; set data.cache_features=false or freeze the encoder."
            )
        encoder, key = found
        dataset.features = cached_features(
            self.feature_cache_path(split, key),
            dataset.names,
            dataset.paths,
            encoder,
            self.transforms["eval"],
            self.trainer.strategy.root_device,
            self.eval_batch_size,
            self.num_workers,
        )

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, split: str) -> DataLoader:
        """Training shuffles the (image, caption) pairs and drops the last partial batch when
        there is a whole one; evaluation serves each image once with all its captions. With
        cached features the batches are read in the main process (no decoding is left)."""
        if self.cache_features:
            self._attach_features(split)
        train = split == "train"
        dataset = self.dataset(split)
        batch_size = self.batch_size if train else self.eval_batch_size
        workers = 0 if self.cache_features else self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) >= batch_size,
            num_workers=workers,
            collate_fn=collate_captions,
            pin_memory=self._pin(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
