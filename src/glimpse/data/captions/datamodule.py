"""Images with reference captions as LightningDataModules yielding :class:`CaptionedImages`.

:class:`CaptionDataModule` is the common base: a subclass only says, per split, which images
the split lists, with their captions, and which image files exist (:meth:`read_sources`).
The base then

* indexes the splits with :class:`~glimpse.data.captions.splits.ListedSplits`: the listed
  images without a file or a caption are left out, counted and warned about once per split,
  and a split that ends up empty or an image in two splits is an error naming the list;
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
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from glimpse.batches import CAPTIONED_IMAGES, CaptionedImages
from glimpse.data.base import (
    SPLITS,
    STAGE_SPLITS,
    GlimpseDataModule,
    check_verification,
    normalisation,
)
from glimpse.data.captions.feature_cache import cache_digest, cached_features
from glimpse.data.captions.splits import CaptionSplit, ListedSplits, SplitSource
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from glimpse.data.spec import DataSpec
from glimpse.data.text.word_tokenizer import WordTokenizer, tokenize
from glimpse.errors import ConfigError

log = logging.getLogger(__name__)


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


class CaptionDataModule(GlimpseDataModule):
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
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        check_verification(verify, skip_corrupt)
        self.mean, self.std = normalisation(mean, std)
        if cache_features and hflip > 0:
            raise ConfigError(
                f"data.cache_features=true caches each image's features once, so it cannot "
                f"serve flipped images; set data.hflip=0 (it is {hflip})."
            )
        if min_word_freq < 1:
            raise ConfigError(f"data.min_word_freq={min_word_freq} must be at least 1.")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.min_word_freq = min_word_freq
        self.crop_ratio = crop_ratio
        self.verify, self.skip_corrupt = verify, skip_corrupt
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
        self.splits = ListedSplits(self.read_sources)

    def read_sources(self) -> dict[str, SplitSource]:
        """Each of ``train``, ``val`` and ``test``'s listed images, captions and files; a split
        evaluated on another's images (COCO's test = val) is that split's very object."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """Provenance kept in the spec's metadata."""
        return {"root": str(self.root)}

    def split(self, name: str) -> CaptionSplit:
        """The split's captioned images that have a file (indexed once, warning once)."""
        return self.splits.split(name)

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
                if s != "train" != split and self.splits.shares_source(s, split)
            ]
            if same:
                self.datasets[split] = self.datasets[same[0]]
            else:
                self.datasets[split] = CaptionDataset(
                    self.splits.verified(split, self.verify, self.num_workers, self.skip_corrupt),
                    self.tokenizer,
                    self.transforms["train" if split == "train" else "eval"],
                    pairs=split == "train",
                )
        return self.datasets[split]

    def display_image(self, split: str, name: str) -> Tensor:
        """Image ``name`` of ``split`` as the model sees it but not normalised: ``(3, H, W)``
        float32 in [0, 1] (for figures when batches hold cached features)."""
        dataset = self.dataset(split)
        if name not in dataset.names:
            raise KeyError(f"{name} is not an image of the {split} split.")
        path = dataset.paths[dataset.names.index(name)]
        unnormalised = eval_transform(self.image_size, self.crop_ratio, (0.0,) * 3, (1.0,) * 3)
        return unnormalised(open_rgb(path))

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
            raise ConfigError(
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

    def split_loader(self, split: str) -> DataLoader:
        """Training shuffles the (image, caption) pairs and drops the last partial batch when
        there is a whole one; evaluation serves each image once with all its captions. With
        cached features the batches are read in the main process (no decoding is left)."""
        if self.cache_features:
            self._attach_features(split)
        workers = 0 if self.cache_features else None
        return self.loader(self.dataset(split), split == "train", collate_captions, workers)
