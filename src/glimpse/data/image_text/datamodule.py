"""Image-text pairs for CLIP (Radford et al. 2021) as a LightningDataModule yielding
:class:`~glimpse.batches.ImageTextPairs`.

Sources (``format``) and what ``path`` names for each:

* ``csv``, ``tsv``, ``jsonl``: a pairs file, or a folder holding ``train.<ext>``,
  ``val.<ext>`` and optionally ``test.<ext>``. CSV and TSV files have a header naming the
  image and caption columns (``source.image_column``, ``source.caption_column``); a JSONL
  line is an object with those keys, whose caption may be a list of captions. Image paths are
  relative to ``source.image_root`` (default: the file's folder). Rows of one image are one
  image with several captions (:mod:`glimpse.data.formats.pair_files`).
* ``flickr8k``, ``coco``: the dataset's folder, read by :mod:`glimpse.data.captions.flickr8k` and
  :mod:`glimpse.data.captions.coco_captions` (layouts, split lists, downloads), every caption a
  pair.
* ``shapes``: the folder under which :func:`glimpse.data.synthetic.shapes.write_pairs` writes a
  synthetic set once (``shapes_pairs_<size>_<seed>_n<num>_s<max_shapes>/``), then read as CSV.
* ``webdataset``: ``{train: shards, val: shards, test: shards}`` (test optional), shard
  patterns or URLs streamed by :class:`~glimpse.data.formats.tar_shards.TarShardPairs`.

A single pairs file (and the shapes set) is split by image, never separating an image's
captions: the sorted image names are shuffled with ``split_seed`` and cut into
``val_fraction`` and ``test_fraction`` of them (at least one val image) and train the rest;
with ``test_fraction`` 0 (or no ``test.<ext>``, or no test shards) the test split is val.
Listed images without a file are counted and named in a warning and left out
(``skip_missing``), or raise; an empty caption, a missing column and an image in two splits
raise ValueError naming the file.

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

``zeroshot``, a labelled image datamodule
(:class:`~glimpse.data.images.image_folder.ImageFolderDataModule`
or a subclass: shapes, imagenette, imagefolder; Hydra builds it from its config), adds its val
(and test) images, with this datamodule's evaluation transform, as a second loader of
:class:`~glimpse.batches.LabelledImages` after the pairs, and its class names as
``spec.metadata["zeroshot_classes"]``, for zero-shot classification during training.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from glimpse.batches import IMAGE_TEXT, ImageTextPairs
from glimpse.data.captions.coco_captions import CocoCaptionsDataModule
from glimpse.data.captions.datamodule import (
    CaptionSplit,
    SplitSource,
    check_disjoint,
    index_split,
    readable_split,
)
from glimpse.data.captions.flickr8k import Flickr8kDataModule
from glimpse.data.formats.pair_files import file_sources, read_pair_file, seeded_split
from glimpse.data.formats.tar_shards import (
    IMAGE_KEYS,
    TEXT_KEYS,
    TarShardPairs,
    check_local_shards,
    expand_shards,
    read_captions,
)
from glimpse.data.images.decode import SHOWN_BAD_FILES, open_rgb
from glimpse.data.images.image_folder import (
    SPLITS,
    STAGE_SPLITS,
    ImageFolderDataModule,
    collate_labelled_images,
)
from glimpse.data.spec import DataSpec
from glimpse.data.synthetic.shapes import write_pairs
from glimpse.data.text.bpe import CONTEXT_LENGTH, BPETokenizer

log = logging.getLogger(__name__)

#: CLIP's normalisation (OpenAI's, as open_clip's OPENAI_DATASET_MEAN and _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FILE_FORMATS = ("csv", "tsv", "jsonl")
#: Each format's ``source`` options and their defaults.
SOURCE_OPTIONS: dict[str, dict[str, Any]] = {
    **{
        name: {"image_column": "image", "caption_column": "caption", "image_root": None}
        for name in FILE_FORMATS
    },
    "flickr8k": {"layout": "auto", "download": False, "base_url": None, "md5": None},
    "coco": {
        "split": "official",
        "karpathy_file": None,
        "download": False,
        "base_url": None,
        "md5": None,
    },
    "shapes": {"num_images": 5000, "seed": 0, "max_shapes": 2, "captions": "scene"},
    "webdataset": {
        "shuffle_buffer": 1000,
        "samples_per_epoch": None,
        "tokenizer_samples": 100_000,
        "image_keys": list(IMAGE_KEYS),
        "text_keys": list(TEXT_KEYS),
        "timeout": 60.0,
        "skip_bad": False,
    },
}
CAPTION_SAMPLING = ("random", "all")


def plain(value: Any) -> Any:
    """Hydra's DictConfig/ListConfig as plain dicts and lists; anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# Datasets -----------------------------------------------------------------------------------


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
        raise ValueError(f"data.crop_ratio={crop_ratio} must be in (0, 1].")
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


# The datamodule -----------------------------------------------------------------------------


class ImageTextDataModule(L.LightningDataModule):
    """Image-text pairs from any of the sources of the module docstring.

    Args:
        format: ``csv``, ``tsv``, ``jsonl``, ``flickr8k``, ``coco``, ``shapes`` or
            ``webdataset``.
        path: where the source is (see the module docstring; for webdataset a mapping of
            split to shards).
        source: the format's own options (:data:`SOURCE_OPTIONS` lists them with their
            defaults): csv/tsv/jsonl ``image_column``, ``caption_column``, ``image_root``;
            flickr8k ``layout``, ``download``, ``base_url``, ``md5``; coco ``split``,
            ``karpathy_file``, ``download``, ``base_url``, ``md5``; shapes ``num_images``,
            ``seed``, ``max_shapes``; webdataset ``shuffle_buffer``, ``samples_per_epoch``
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
        super().__init__()
        if format not in SOURCE_OPTIONS:
            raise ValueError(f"data.format={format!r} must be one of {', '.join(SOURCE_OPTIONS)}.")
        if path is None:
            raise ValueError(f"data.path must say where the {format} pairs are.")
        if caption_sampling not in CAPTION_SAMPLING:
            raise ValueError(
                f"data.caption_sampling={caption_sampling!r} must be one of {CAPTION_SAMPLING}."
            )
        if skip_corrupt and not verify:
            raise ValueError("data.skip_corrupt=true needs data.verify=true to find the files.")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"data.mean={list(mean)} and data.std={list(std)} need 3 values.")
        if context_length < 3:
            raise ValueError(f"data.context_length={context_length} must be at least 3.")
        options = plain(source) or {}
        unknown = sorted(set(options) - set(SOURCE_OPTIONS[format]))
        if unknown:
            raise ValueError(
                f"data.source has option(s) {', '.join(unknown)} that format {format} does not "
                f"take; its options are {', '.join(SOURCE_OPTIONS[format])}."
            )
        self.format, self.path = format, plain(path)
        self.options = {**SOURCE_OPTIONS[format], **options}
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transforms = pair_transforms(self.image_size, scale, crop_ratio, self.mean, self.std)
        self.tokenizer_source = plain(tokenizer)
        self.vocab_size, self.min_frequency = vocab_size, min_frequency
        self.context_length = context_length
        self.caption_sampling = caption_sampling
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.verify, self.skip_corrupt, self.skip_missing = verify, skip_corrupt, skip_missing
        self.pin_memory = pin_memory
        self.zeroshot = self._zeroshot_module(zeroshot)
        self.datasets: dict[str, Dataset] = {}
        self._splits: dict[str, CaptionSplit] = {}
        self._shards: dict[str, list[str]] | None = None
        self._sources: dict[str, SplitSource] | None = None
        self._tokenizer: BPETokenizer | None = None
        self._spec: DataSpec | None = None

    @staticmethod
    def _zeroshot_module(
        zeroshot: ImageFolderDataModule | Mapping[str, Any] | None,
    ) -> ImageFolderDataModule | None:
        if isinstance(zeroshot, Mapping | DictConfig):
            zeroshot = instantiate(zeroshot)
        if zeroshot is not None and not isinstance(zeroshot, ImageFolderDataModule):
            raise ValueError(
                f"data.zeroshot must be a labelled image datamodule (an ImageFolderDataModule "
                f"such as data/shapes.yaml's), not {type(zeroshot).__name__}."
            )
        return zeroshot

    # Sources ---------------------------------------------------------------------------

    @property
    def shapes_root(self) -> Path:
        """Where the shapes format's set is written: its name holds every parameter."""
        o = self.options
        name = f"shapes_pairs_{self.image_size}_{o['seed']}_n{o['num_images']}_s{o['max_shapes']}"
        if o["captions"] != "scene":
            name += f"_{o['captions']}"
        return Path(self.path) / name

    def _caption_module(self) -> Flickr8kDataModule | CocoCaptionsDataModule:
        """The captioning datamodule whose parsing the flickr8k and coco formats reuse."""
        if self.format == "flickr8k":
            return Flickr8kDataModule(
                root=self.path, split_seed=self.split_seed, verify=False, **self.options
            )
        return CocoCaptionsDataModule(root=self.path, verify=False, **self.options)

    def prepare_data(self) -> None:
        """Write the shapes set, or download Flickr8k or COCO (with ``source.download``), and
        prepare the zero-shot data."""
        if self.format == "shapes" and not self.shapes_root.is_dir():
            log.info("Writing the shapes pairs to %s", self.shapes_root)
            o = self.options
            write_pairs(
                self.shapes_root,
                o["num_images"],
                self.image_size,
                o["seed"],
                max_shapes=o["max_shapes"],
                captions=o["captions"],
            )
        elif self.format in ("flickr8k", "coco"):
            self._caption_module().prepare_data()
        if self.zeroshot is not None:
            self.zeroshot.prepare_data()

    def _file_sources(self) -> dict[str, SplitSource]:
        """The splits of a pairs file (seeded) or of a folder of split files."""
        if self.format == "shapes":
            path, extension, image_root = self.shapes_root / "pairs.csv", "csv", self.shapes_root
            read = partial(read_pair_file, format="csv")
        else:
            o = self.options
            path, extension = Path(self.path), self.format
            folder = path if path.is_dir() else path.parent
            image_root = Path(o["image_root"]) if o["image_root"] else folder
            read = partial(
                read_pair_file,
                format=self.format,
                image_column=o["image_column"],
                caption_column=o["caption_column"],
            )
        if path.is_file():
            captions = read(path)
            names = seeded_split(
                list(captions), self.val_fraction, self.test_fraction, self.split_seed
            )
            listed = f"{path} (seeded split)"
            sources = {s: file_sources(captions, image_root, listed, names[s]) for s in SPLITS}
            if not names["test"]:
                sources["test"] = sources["val"]
            return sources
        files = {s: path / f"{s}.{extension}" for s in SPLITS}
        if not (files["train"].is_file() and files["val"].is_file()):
            raise FileNotFoundError(
                f"data.path={path} is neither a {extension} pairs file nor a folder holding "
                f"train.{extension} and val.{extension}."
            )
        sources = {}
        for split, file in files.items():
            if split == "test" and not file.is_file():
                sources[split] = sources["val"]
                continue
            captions = read(file)
            sources[split] = file_sources(captions, image_root, str(file), list(captions))
        return sources

    def sources(self) -> dict[str, SplitSource]:
        """Each split's listed images, their captions and files (read once)."""
        if self._sources is None:
            if self.format in ("flickr8k", "coco"):
                module = self._caption_module()
                sources = module.read_sources()
            else:
                sources = self._file_sources()
            check_disjoint(sources)
            self._sources = sources
        return self._sources

    def split(self, name: str) -> CaptionSplit:
        """The split's captioned images that have a file (indexed once, warning once about
        the missing ones, or raising without ``skip_missing``)."""
        if name not in self._splits:
            source = self.sources()[name]
            same = [s for s in self._splits if self.sources()[s] is source]
            if same:
                self._splits[name] = self._splits[same[0]]
                return self._splits[name]
            missing = [n for n, caps in source.captions.items() if caps and n not in source.files]
            if missing and not self.skip_missing:
                raise FileNotFoundError(
                    f"{len(missing)} of the {len(source.captions)} images listed in "
                    f"{source.listed_in} have no file in {source.image_dir}, e.g. "
                    f"{', '.join(missing[:SHOWN_BAD_FILES])}; fix the paths or set "
                    "data.skip_missing=true to leave them out."
                )
            self._splits[name] = index_split(name, source)
        return self._splits[name]

    def shards(self) -> dict[str, list[str]]:
        """The webdataset format's shards of each split (test: val's when it has none)."""
        if self._shards is None:
            spec = self.path if isinstance(self.path, Mapping) else {}
            if not spec.get("train") or not spec.get("val"):
                raise ValueError(
                    "data.path for format webdataset must map train and val (and optionally "
                    f"test) to shard patterns or URLs, not {self.path!r}."
                )
            shards = {s: expand_shards(spec[s]) for s in SPLITS if spec.get(s)}
            shards.setdefault("test", shards["val"])
            for split, urls in shards.items():
                check_local_shards(urls, f"the {split} split ({spec.get(split, spec['val'])})")
            self._shards = shards
        return self._shards

    # Tokenizer and spec ------------------------------------------------------------------

    def _train_captions(self) -> list[str]:
        if self.format == "webdataset":
            o = self.options
            return read_captions(
                self.shards()["train"], o["tokenizer_samples"], o["text_keys"], o["timeout"]
            )
        return [c for caps in self.split("train").captions for c in caps]

    def _build_tokenizer(self) -> BPETokenizer:
        source = self.tokenizer_source
        if isinstance(source, Mapping):
            return BPETokenizer.from_dict(source)
        if source == "clip":
            return BPETokenizer.clip()
        if source == "train":
            captions = self._train_captions()
            if not captions:
                raise ValueError("The training split holds no caption to train the tokenizer on.")
            tokenizer = BPETokenizer.train(captions, self.vocab_size, self.min_frequency)
            log.info(
                "Trained a byte-level BPE of %d tokens on %d training captions",
                tokenizer.vocab_size,
                len(captions),
            )
            return tokenizer
        return BPETokenizer.load(source)

    def _build_spec(self) -> DataSpec:
        if self.format == "webdataset":
            counts = {s: {"shards": len(urls)} for s, urls in self.shards().items()}
        else:
            counts = {s: self.split(s).counts() for s in SPLITS}
            for split, c in counts.items():
                log.info("%s split: %d images with %d captions", split, c["images"], c["captions"])
        self._tokenizer = self._build_tokenizer()
        metadata: dict[str, Any] = {
            "format": self.format,
            "path": str(self.path) if not isinstance(self.path, Mapping) else dict(self.path),
            "splits": counts,
            "context_length": self.context_length,
            "tokenizer_kind": self._tokenizer.kind,
            "vocab_size": self._tokenizer.vocab_size,
            "caption_sampling": self.caption_sampling,
        }
        if self.format == "shapes":
            metadata["generator"] = "glimpse.data.synthetic.shapes.write_pairs"
            shapes_keys = ("num_images", "seed", "max_shapes", "captions")
            metadata["shapes"] = {k: self.options[k] for k in shapes_keys}
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
    def spec(self) -> DataSpec:
        if self._spec is None:
            raise RuntimeError("Call prepare_data() and setup() before reading the spec.")
        return self._spec

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
            train = split == "train"
            transform = self.transforms["train" if train else "eval"]
            if self.format == "webdataset":
                o = self.options
                self.datasets[split] = TarShardPairs(
                    self.shards()[split],
                    transform,
                    shuffle=train,
                    shuffle_buffer=o["shuffle_buffer"],
                    seed=self.split_seed,
                    split_by="shards" if train else "samples",
                    samples_per_epoch=o["samples_per_epoch"] if train else None,
                    multiple_of=self.batch_size,
                    image_keys=o["image_keys"],
                    text_keys=o["text_keys"],
                    timeout=o["timeout"],
                    skip_bad=o["skip_bad"],
                )
            else:
                per_image = train and self.caption_sampling == "random"
                self.datasets[split] = PairDataset(self._verified(split), transform, per_image)
        return self.datasets[split]

    def _verified(self, name: str) -> CaptionSplit:
        """The split, its unreadable images raising or (``skip_corrupt``) left out."""
        split = self.split(name)
        return (
            readable_split(split, name, self.num_workers, self.skip_corrupt)
            if self.verify
            else split
        )

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, train: bool, collate: Any) -> DataLoader:
        iterable = isinstance(dataset, TarShardPairs)
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and not iterable,
            drop_last=train and not iterable and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self._pin(),
            persistent_workers=self.num_workers > 0,
        )

    def pairs_loader(self, split: str) -> DataLoader:
        """The DataLoader of ``split``'s pairs."""
        collate = partial(
            collate_pairs, tokenizer=self.tokenizer, context_length=self.context_length
        )
        return self._loader(self.dataset(split), split == "train", collate)

    def zeroshot_loader(self, split: str) -> DataLoader:
        """The zero-shot data's ``split`` as :class:`LabelledImages` batches, with this
        datamodule's evaluation transform (its image size and normalisation)."""
        if self.zeroshot is None:
            raise RuntimeError("data.zeroshot is not set.")
        dataset = copy.copy(self.zeroshot.dataset(split))
        dataset.transform, dataset.loader = self.transforms["eval"], open_rgb
        return self._loader(dataset, False, collate_labelled_images)

    def train_dataloader(self) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if self.format == "webdataset" and world_size > 1 and not self.options["samples_per_epoch"]:
            raise ValueError(
                f"Training on {world_size} processes from shards needs "
                "data.source.samples_per_epoch, so that every process reads the same number of "
                "batches (each shard once would give them different numbers)."
            )
        return self.pairs_loader("train")

    def _evaluation(self, split: str) -> DataLoader | list[DataLoader]:
        pairs = self.pairs_loader(split)
        return pairs if self.zeroshot is None else [pairs, self.zeroshot_loader(split)]

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The val pairs, then, with ``zeroshot``, its val images."""
        return self._evaluation("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test pairs, then, with ``zeroshot``, its test images."""
        return self._evaluation("test")
