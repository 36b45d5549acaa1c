"""Image-text pairs for CLIP (Radford et al. 2021) as a LightningDataModule yielding
:class:`~glimpse.batches.ImageTextPairs`.

Sources (``format``, each a class of :mod:`glimpse.data.image_text.sources`) and what ``path``
names for each:

* ``csv``, ``tsv``, ``jsonl``: a pairs file, or a folder holding ``train.<ext>``,
  ``val.<ext>`` and optionally ``test.<ext>``. CSV and TSV files have a header naming the
  image and caption columns (``source.image_column``, ``source.caption_column``); a JSONL
  line is an object with those keys, whose caption may be a list of captions. Image paths are
  relative to ``source.image_root`` (default: the file's folder). Rows of one image are one
  image with several captions (:mod:`glimpse.data.formats.pair_files`).
* ``flickr8k``, ``coco``: the dataset's folder, read by :mod:`glimpse.data.captions.flickr8k` and
  :mod:`glimpse.data.captions.coco_captions` (layouts, split lists, downloads), every caption a
  pair.
* ``webdataset``: ``{train: shards, val: shards, test: shards}`` (test optional), shard
  patterns or URLs streamed by :class:`~glimpse.data.formats.tar_shards.TarShardPairs`.

The synthetic shapes pairs are :class:`~glimpse.data.synthetic.datamodules.ShapesPairsDataModule`.

A single pairs file is split by image, never separating an image's
captions: the sorted image names are shuffled with ``split_seed`` and cut into
``val_fraction`` and ``test_fraction`` of them (at least one val image) and train the rest;
with ``test_fraction`` 0 (or no ``test.<ext>``, or no test shards) the test split is val.
Listed images without a file are counted and named in a warning and left out
(``skip_missing``), or raise; an empty caption, a missing column and an image in two splits
raise :class:`~glimpse.errors.DataError` naming the file.

Training serves each image once per epoch with one of its captions drawn at random
(``caption_sampling: random``; no batch then holds one image twice, which would be a false
negative of the contrastive loss), or every (image, caption) pair once (``all``); evaluation
serves every pair, each with the index of its image within the split as ``image_ids``.
Transforms are open_clip's: RandomResizedCrop over ``scale`` (0.9, 1) of the area for
training, the shorter side resized to ``image_size / crop_ratio`` and centre-cropped for
evaluation, bicubic, normalised with CLIP's mean and std.

The :class:`~glimpse.data.text.bpe.BPETokenizer` is trained on the training captions at setup
(``tokenizer: train``; for shards, on the first ``source.tokenizer_samples`` captions),
CLIP's released one (``clip``), or loaded from a file or a ``to_dict()`` dict; its dict is
the spec's ``tokenizer``, and ``spec.metadata["context_length"]`` the token sequences' length.

``zeroshot``, a labelled image datamodule (an
:class:`~glimpse.data.images.image_folder.ImageFolderDataModule` or a subclass: shapes,
imagenette, imagefolder; Hydra builds it from its config), adds its val (and test) images,
with this datamodule's evaluation transform, as a second loader of
:class:`~glimpse.batches.LabelledImages` after the pairs, and its class names as
``spec.metadata["zeroshot_classes"]``, for zero-shot classification during training.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from glimpse.batches import IMAGE_TEXT, ImageTextPairs
from glimpse.data.base import (
    SPLITS,
    STAGE_SPLITS,
    GlimpseDataModule,
    check_verification,
    normalisation,
)
from glimpse.data.image_text.sources import (
    CAPTION_SAMPLING,
    CocoPairs,
    Flickr8kPairs,
    PairFiles,
    PairSource,
    Reading,
    ShardPairs,
    source_options,
)
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.image_folder import ImageFolderDataModule, collate_labelled_images
from glimpse.data.spec import DataSpec
from glimpse.data.text.bpe import CONTEXT_LENGTH, BPETokenizer
from glimpse.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: CLIP's normalisation (OpenAI's, as open_clip's OPENAI_DATASET_MEAN and _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def plain(value: Any) -> Any:
    """Hydra's DictConfig/ListConfig as plain dicts and lists; anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def collate_pairs(
    samples: Sequence[tuple[Tensor, str, int]], tokenizer: BPETokenizer, context_length: int
) -> ImageTextPairs:
    """Stack ``(image, caption, image_id)`` samples into :class:`ImageTextPairs`, tokenizing the
    captions to ``(B, context_length)``."""
    images, texts, ids = zip(*samples, strict=True)
    return ImageTextPairs(
        images=torch.stack(images).float(),
        tokens=tokenizer.encode(texts, context_length),
        texts=tuple(texts),
        image_ids=torch.tensor(ids, dtype=torch.long),
    )


def pair_transforms(
    image_size: int,
    scale: Sequence[float],
    crop_ratio: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, v2.Compose]:
    """open_clip's ``train`` and ``eval`` transforms: PIL image -> ``(3, S, S)`` float32,
    normalised (bicubic resampling, as CLIP)."""
    if not 0 < crop_ratio <= 1:
        raise ConfigError(f"data.crop_ratio={crop_ratio} must be in (0, 1].")
    bicubic = InterpolationMode.BICUBIC
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return {
        "train": v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(
                    image_size, scale=tuple(scale), interpolation=bicubic, antialias=True
                ),
                *finish,
            ]
        ),
        "eval": v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(int(image_size / crop_ratio), interpolation=bicubic, antialias=True),
                v2.CenterCrop(image_size),
                *finish,
            ]
        ),
    }


class ImageTextDataModule(GlimpseDataModule):
    """Image-text pairs from any of the sources of the module docstring.

    Args:
        format: ``csv``, ``tsv``, ``jsonl``, ``flickr8k``, ``coco``, ``shapes`` or
            ``webdataset`` (:attr:`FORMATS`).
        path: where the source is (see the module docstring; for webdataset a mapping of
            split to shards).
        source: the format's own options, the keyword arguments of its source class
            (:mod:`glimpse.data.image_text.sources`): csv/tsv/jsonl ``image_column``,
            ``caption_column``, ``image_root``; flickr8k ``layout``, ``download``,
            ``base_url``, ``md5``; coco ``split``, ``karpathy_file``, ``download``,
            ``base_url``, ``md5``; webdataset ``shuffle_buffer``, ``samples_per_epoch``
            (resampled shards, needed with several processes), ``tokenizer_samples``,
            ``image_keys``, ``text_keys``, ``timeout``, ``skip_bad``.
        val_fraction, test_fraction, split_seed: the seeded split of a single pairs file (and
            of shapes); ``split_seed`` is also Flickr8k's and the shard shuffles' seed.
        image_size: the side of the square images the model receives.
        scale: RandomResizedCrop's range of the crop's area in training.
        crop_ratio: evaluation resizes the shorter side to ``image_size / crop_ratio``.
        mean, std: per-channel normalisation of RGB values in [0, 1].
        tokenizer: ``train``, ``clip``, a file written by :meth:`BPETokenizer.save`, or a
            :meth:`BPETokenizer.to_dict` dict (a checkpoint's ``spec.tokenizer``).
        vocab_size, min_frequency: the trained tokenizer's size and merge threshold.
        context_length: the length ``L`` of every token sequence.
        caption_sampling: ``random`` (each training image once per epoch with a random
            caption) or ``all`` (every training pair once).
        batch_size: training pairs per batch; eval_batch_size: evaluation pairs and zero-shot
            images per batch (None: ``batch_size``).
        num_workers: DataLoader worker processes (and verification threads).
        verify, skip_corrupt: decode every image once at setup, raising on an unreadable one
            or, with ``skip_corrupt``, leaving it out with a warning.
        skip_missing: leave out (counted in a warning) listed images without a file, instead
            of raising.
        pin_memory: page-locked batches; None pins them when training on a CUDA device.
        zeroshot: a labelled image datamodule (or its config) for zero-shot validation.
    """

    KIND = IMAGE_TEXT
    #: Each format's source class: called with ``(path, reading, **source options)``.
    FORMATS: ClassVar[dict[str, Callable[..., PairSource]]] = {
        **{name: partial(PairFiles, format=name) for name in PairFiles.FORMATS},
        "flickr8k": Flickr8kPairs,
        "coco": CocoPairs,
        "webdataset": ShardPairs,
    }

    def __init__(
        self,
        format: str = "csv",
        path: str | os.PathLike | Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        image_size: int = 224,
        scale: Sequence[float] = (0.9, 1.0),
        crop_ratio: float = 1.0,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        tokenizer: str | Mapping[str, Any] = "train",
        vocab_size: int = 8192,
        min_frequency: int = 2,
        context_length: int = CONTEXT_LENGTH,
        caption_sampling: str = "random",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        verify: bool = True,
        skip_corrupt: bool = False,
        skip_missing: bool = True,
        pin_memory: bool | None = None,
        zeroshot: ImageFolderDataModule | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
        if format not in self.FORMATS:
            raise ConfigError(f"data.format={format!r} must be one of {', '.join(self.FORMATS)}.")
        if path is None:
            raise ConfigError(f"data.path must say where the {format} pairs are.")
        if caption_sampling not in CAPTION_SAMPLING:
            raise ConfigError(
                f"data.caption_sampling={caption_sampling!r} must be one of {CAPTION_SAMPLING}."
            )
        check_verification(verify, skip_corrupt)
        self.mean, self.std = normalisation(mean, std)
        if context_length < 3:
            raise ConfigError(f"data.context_length={context_length} must be at least 3.")
        self.format, self.path = format, plain(path)
        self.image_size = int(image_size)
        self.transforms = pair_transforms(self.image_size, scale, crop_ratio, self.mean, self.std)
        self.tokenizer_source = plain(tokenizer)
        self.vocab_size, self.min_frequency = vocab_size, min_frequency
        self.context_length = context_length
        self.caption_sampling = caption_sampling
        reading = Reading(
            self.image_size,
            val_fraction,
            test_fraction,
            split_seed,
            caption_sampling,
            verify,
            skip_corrupt,
            skip_missing,
            num_workers,
            batch_size,
        )
        self.source = self._make_source(plain(source) or {}, reading)
        self.zeroshot = self._zeroshot_module(zeroshot)
        self.datasets: dict[str, Dataset] = {}
        self._tokenizer: BPETokenizer | None = None

    def _make_source(self, options: dict[str, Any], reading: Reading) -> PairSource:
        """The source of :attr:`format`, with the ``data.source`` options it takes."""
        make = self.FORMATS[self.format]
        known = source_options(make)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"data.source has option(s) {', '.join(unknown)} that format {self.format} does "
                f"not take; its options are {', '.join(known)}."
            )
        return make(self.path, reading, **options)

    @staticmethod
    def _zeroshot_module(
        zeroshot: ImageFolderDataModule | Mapping[str, Any] | None,
    ) -> ImageFolderDataModule | None:
        if isinstance(zeroshot, Mapping | DictConfig):
            zeroshot = instantiate(zeroshot)
        if zeroshot is not None and not isinstance(zeroshot, ImageFolderDataModule):
            raise ConfigError(
                f"data.zeroshot must be a labelled image datamodule (an ImageFolderDataModule "
                f"such as data/shapes.yaml's), not {type(zeroshot).__name__}."
            )
        return zeroshot

    def prepare_data(self) -> None:
        """The source's downloads or writing, and the zero-shot data's."""
        self.source.prepare()
        if self.zeroshot is not None:
            self.zeroshot.prepare_data()

    # Tokenizer and spec ------------------------------------------------------------------

    def _build_tokenizer(self) -> BPETokenizer:
        source = self.tokenizer_source
        if isinstance(source, Mapping):
            return BPETokenizer.from_dict(source)
        if source == "clip":
            return BPETokenizer.clip()
        if source == "train":
            captions = self.source.train_captions()
            if not captions:
                raise DataError("The training split holds no caption to train the tokenizer on.")
            tokenizer = BPETokenizer.train(captions, self.vocab_size, self.min_frequency)
            log.info(
                "Trained a byte-level BPE of %d tokens on %d training captions",
                tokenizer.vocab_size,
                len(captions),
            )
            return tokenizer
        return BPETokenizer.load(source)

    def _build_spec(self) -> DataSpec:
        counts = self.source.counts()
        self._tokenizer = self._build_tokenizer()
        metadata: dict[str, Any] = {
            "format": self.format,
            "path": str(self.path) if not isinstance(self.path, Mapping) else dict(self.path),
            "splits": counts,
            "context_length": self.context_length,
            "tokenizer_kind": self._tokenizer.kind,
            "vocab_size": self._tokenizer.vocab_size,
            "caption_sampling": self.caption_sampling,
            **self.source.metadata(),
        }
        if self.zeroshot is not None:
            metadata["zeroshot_classes"] = list(self.zeroshot.spec.class_names)
            metadata["zeroshot_data"] = type(self.zeroshot).__name__
        return DataSpec(
            kind=IMAGE_TEXT,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            tokenizer=self._tokenizer.to_dict(),
            metadata=metadata,
        )

    def setup(self, stage: str | None = None) -> None:
        """Index the splits and build the tokenizer and spec (once), the zero-shot data's
        splits for ``stage``, and the datasets of the splits ``stage`` needs (all for None)."""
        if self.zeroshot is not None:
            self.zeroshot.setup("test" if stage in ("test", "predict") else "validate")
        if self._spec is None:
            self._spec = self._build_spec()
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self.dataset(split)

    @property
    def tokenizer(self) -> BPETokenizer:
        """The tokenizer of the spec."""
        if self._tokenizer is None:
            raise RuntimeError("Call prepare_data() and setup() before reading the tokenizer.")
        return self._tokenizer

    # Datasets and loaders -----------------------------------------------------------------

    def dataset(self, split: str) -> Dataset:
        """The split's dataset, built (and verified) on first use."""
        if split not in self.datasets:
            transform = self.transforms["train" if split == "train" else "eval"]
            self.datasets[split] = self.source.dataset(split, transform)
        return self.datasets[split]

    def pairs_loader(self, split: str) -> DataLoader:
        """The DataLoader of ``split``'s pairs."""
        collate = partial(
            collate_pairs, tokenizer=self.tokenizer, context_length=self.context_length
        )
        return self.loader(self.dataset(split), split == "train", collate)

    def zeroshot_loader(self, split: str) -> DataLoader:
        """The zero-shot data's ``split`` as :class:`LabelledImages` batches, with this
        datamodule's evaluation transform (its image size and normalisation)."""
        if self.zeroshot is None:
            raise RuntimeError("data.zeroshot is not set.")
        dataset = copy.copy(self.zeroshot.dataset(split))
        dataset.transform, dataset.loader = self.transforms["eval"], open_rgb
        return self.loader(dataset, False, collate_labelled_images)

    def split_loader(self, split: str) -> DataLoader | list[DataLoader]:
        """Training: the train pairs. Validation and testing: the split's pairs, then, with
        ``zeroshot``, its images of the same split."""
        if split == "train":
            self.source.check_processes(self.trainer.world_size if self.trainer else 1)
            return self.pairs_loader("train")
        pairs = self.pairs_loader(split)
        return pairs if self.zeroshot is None else [pairs, self.zeroshot_loader(split)]
