"""Image-text pairs streamed from WebDataset tar shards, on disk or behind a URL.

The format of the large pair datasets (CC3M, CC12M, LAION through img2dataset) and of
open_clip's training: each shard is a tar file whose members are grouped into samples by
name, ``<key>.jpg`` (or png, jpeg, webp) with ``<key>.txt`` (or a ``<key>.json`` holding a
``caption`` field). Shards are named by brace patterns (``/data/cc3m/{00000..00331}.tar``),
several patterns joined by ``::``, or a list; a pattern may be a local path, an ``http(s)``
URL (read with ``urllib``, streamed, never stored) or any other scheme WebDataset's ``gopen``
opens (``pipe:``, ``s3:``...).

:class:`TarShardPairs` is an IterableDataset, read with the ``webdataset`` library's tar
expansion and key grouping:

* each epoch the shard list is shuffled with ``(seed, epoch)``, the same order in every
  process, then dealt out by distributed rank and by DataLoader worker (WebDataset's
  ``split_by_node`` and ``split_by_worker``), so every shard is read once per epoch; samples
  are shuffled in a buffer of ``shuffle_buffer`` per worker;
* for evaluation (``split_by="samples"``) every rank reads every shard (dealt out by worker)
  and keeps every ``world_size``-th sample from its rank's place, so every sample is seen once
  and every rank gets some, whatever the number of shards (a rank without batches would hang
  DDP's end-of-epoch synchronisation);
* with ``samples_per_epoch`` each worker instead draws shards at random, with replacement,
  and stops after that many samples (open_clip's ``--dataset-resampled``), so every rank reads
  the same number of batches, as DDP needs;
* a shard that cannot be opened or read raises :class:`ShardError` naming it; a sample
  without an image or a caption, or whose image cannot be decoded, raises a DataError naming
  the shard and key, or, with ``skip_bad``, is left out with a logged warning.

Items are ``(image (3, H, W) float32, caption, image_id)``: ``image_id`` is a stable 63-bit
hash of the shard and key, so that equal ids mean the same image across ranks and workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import random
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from torch import Tensor
from torch.utils.data import IterableDataset
from webdataset.filters import shuffle
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls, split_by_node, split_by_worker
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.utils import pytorch_worker_info

from glimpse.data.images.decode import SHOWN_BAD_FILES, CorruptImageError, open_rgb
from glimpse.errors import ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
TEXT_KEYS = ("txt", "json")
#: The field of a ``.json`` member that holds the caption.
JSON_CAPTION = "caption"


class ShardError(DataError, RuntimeError):
    """A shard cannot be opened or read as a tar archive."""


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """The shard paths or URLs of brace patterns (``a-{000..009}.tar``), ``::``-joined lists
    of them, or a list of either."""
    patterns = [shards] if isinstance(shards, str) else list(shards)
    urls = [url for pattern in patterns for url in expand_urls(str(pattern))]
    if not urls:
        raise ConfigError(f"The shard pattern {shards!r} names no shard.")
    return urls


def is_local(url: str) -> bool:
    """Whether ``url`` is a path on this machine (no scheme, or ``file:``)."""
    return url.startswith("file://") or ("://" not in url and not url.startswith("pipe:"))


def local_path(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def check_local_shards(urls: Sequence[str], what: str) -> None:
    """Raise FileNotFoundError counting and naming the local shards of ``urls`` that are not
    files (URLs are only checked when read)."""
    missing = [u for u in urls if is_local(u) and not local_path(u).is_file()]
    if missing:
        raise MissingFileError(
            f"{len(missing)} of the {len(urls)} shards of {what} are not files, e.g. "
            f"{', '.join(missing[:SHOWN_BAD_FILES])}; check the shard pattern."
        )


def open_shard(url: str, timeout: float = 60.0) -> IO[bytes]:
    """A binary stream of the shard at ``url``: a local file, an ``http(s)`` response, or
    what WebDataset's ``gopen`` opens for other schemes. Raises :class:`ShardError` naming
    ``url`` when it cannot be opened."""
    try:
        if url.startswith(("http://", "https://")):
            return urllib.request.urlopen(url, timeout=timeout)
        if is_local(url):
            return open(local_path(url), "rb")
        return gopen(url)
    except (OSError, ValueError, urllib.error.URLError) as error:
        raise ShardError(
            f"Could not open the shard {url} ({error}); check the shard pattern "
            "(data.path) and that its host is reachable."
        ) from error


def shard_records(
    url: str, timeout: float = 60.0, select: Callable[[str], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order: dicts of ``__key__``, ``__url__`` and each member's
    bytes by extension (lower case), keeping the members whose name ``select`` accepts.
    Raises :class:`ShardError` naming ``url`` when it is not a readable tar archive."""
    stream = open_shard(url, timeout)
    try:
        files = tar_file_expander([{"url": url, "stream": stream}], select_files=select)
        yield from group_by_keys(files)
    except (OSError, tarfile.TarError, EOFError) as error:
        raise ShardError(
            f"The shard {url} cannot be read as a tar archive ({error}); is it whole?"
        ) from error
    finally:
        stream.close()


def caption_of(record: dict[str, Any], text_keys: Sequence[str]) -> str | None:
    """The record's caption from its first member among ``text_keys`` (stripped), or None when
    it has none, or an empty or unreadable one."""
    key = next((k for k in text_keys if k in record), None)
    if key is None:
        return None
    try:
        text = record[key].decode("utf-8")
        if key == "json":
            text = json.loads(text).get(JSON_CAPTION)
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(text, str):
        return None
    return text.strip() or None


def read_captions(
    urls: Sequence[str], limit: int, text_keys: Sequence[str] = TEXT_KEYS, timeout: float = 60.0
) -> list[str]:
    """The first ``limit`` captions of the shards, in order, reading no image (for training
    the tokenizer)."""
    suffixes = tuple(f".{key}" for key in text_keys)
    captions: list[str] = []
    for url in urls:
        for record in shard_records(url, timeout, select=lambda name: name.endswith(suffixes)):
            caption = caption_of(record, text_keys)
            if caption is not None:
                captions.append(caption)
            if len(captions) >= limit:
                return captions
    return captions


def image_id(url: str, key: str) -> int:
    """A stable non-negative 63-bit id of the sample ``key`` of the shard ``url``."""
    digest = hashlib.blake2b(f"{url}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TarShardPairs(IterableDataset):
    """Image-text pairs of WebDataset shards (see the module docstring).

    Args:
        urls: the shards (:func:`expand_shards`).
        transform: PIL image -> ``(3, H, W)`` tensor.
        shuffle: shuffle the shards each epoch and the samples in a buffer.
        shuffle_buffer: samples each worker shuffles among.
        seed: seeds both shuffles, with the epoch (and the rank and worker for the buffer).
        split_by: ``shards`` (training) or ``samples`` (evaluation): what is dealt out among
            distributed ranks.
        samples_per_epoch: when set, the epoch's samples over all ranks and workers, drawn
            from shards chosen at random with replacement; each worker reads a multiple of
            ``multiple_of`` of them, so every rank reads the same number of batches.
        multiple_of: the batch size, for ``samples_per_epoch``.
        image_keys, text_keys: member extensions holding the image and the caption, first
            found used.
        timeout: seconds to wait for a shard's host.
        skip_bad: leave out (with a warning) samples lacking an image or caption or whose
            image cannot be decoded, instead of raising.
    """

    def __init__(
        self,
        urls: Sequence[str],
        transform: Callable[[Any], Tensor],
        *,
        shuffle: bool = False,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        split_by: str = "shards",
        samples_per_epoch: int | None = None,
        multiple_of: int = 1,
        image_keys: Sequence[str] = IMAGE_KEYS,
        text_keys: Sequence[str] = TEXT_KEYS,
        timeout: float = 60.0,
        skip_bad: bool = False,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("TarShardPairs needs at least one shard.")
        if split_by not in ("shards", "samples"):
            raise ValueError(f"split_by={split_by!r} must be shards or samples.")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ConfigError(
                f"data.source.samples_per_epoch={samples_per_epoch} must be at least 1, or null."
            )
        self.urls = list(urls)
        self.transform = transform
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.split_by = split_by
        self.samples_per_epoch, self.multiple_of = samples_per_epoch, max(1, multiple_of)
        self.image_keys, self.text_keys = tuple(image_keys), tuple(text_keys)
        self.timeout, self.skip_bad = timeout, skip_bad
        self.epoch = -1

    def worker_shards(self, epoch: int) -> list[str]:
        """This rank's and worker's shards for ``epoch``: the list shuffled with ``(seed,
        epoch)`` when shuffling, then (when splitting by shards) every ``world_size``-th from
        the rank's place, then every ``num_workers``-th of those from the worker's."""
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}/{epoch}").shuffle(urls)
        if self.split_by == "shards":
            urls = list(split_by_node(urls))
        return list(split_by_worker(urls))

    def samples_per_worker(self) -> int:
        """With ``samples_per_epoch``: this worker's share, rounded up to ``multiple_of``."""
        _, world_size, _, num_workers = pytorch_worker_info()
        share = self.samples_per_epoch / (world_size * num_workers * self.multiple_of)
        return math.ceil(share) * self.multiple_of

    def _resampled(self, rng: random.Random) -> Iterator[dict[str, Any]]:
        """Records of shards drawn with replacement; raises after every shard in a row gave
        none."""
        empty = 0
        while empty < len(self.urls):
            found = False
            for record in shard_records(rng.choice(self.urls), self.timeout):
                found = True
                yield record
            empty = 0 if found else empty + 1
        raise DataError(
            f"None of the {len(self.urls)} shards, e.g. {self.urls[0]}, holds a sample."
        )

    def records(self, epoch: int) -> Iterator[dict[str, Any]]:
        """This worker's records of ``epoch``, before decoding."""
        rank, world_size, worker, _ = pytorch_worker_info()
        rng = random.Random(f"{self.seed}/{epoch}/{rank}/{worker}")
        if self.samples_per_epoch is not None:
            records = self._resampled(rng)
            count = self.samples_per_worker()
            records = (r for _, r in zip(range(count), records, strict=False))
        else:
            records = (
                r for url in self.worker_shards(epoch) for r in shard_records(url, self.timeout)
            )
            if self.split_by == "samples":
                records = (r for i, r in enumerate(records) if i % world_size == rank)
        if self.shuffle and self.shuffle_buffer > 1:
            records = shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(records)
        return records

    def decode(self, record: dict[str, Any]) -> tuple[Tensor, str, int] | None:
        """The record's ``(image, caption, image_id)``; None for a bad one when ``skip_bad``."""
        where = f"sample {record['__key__']} of the shard {record['__url__']}"
        image_key = next((k for k in self.image_keys if k in record), None)
        caption = caption_of(record, self.text_keys)
        problem = None
        if image_key is None:
            problem = f"{where} has no image ({', '.join(self.image_keys)})"
        elif caption is None:
            problem = (
                f"{where} has no caption ({', '.join(self.text_keys)}), or an empty or "
                "unreadable one"
            )
        else:
            try:
                image = open_rgb(io.BytesIO(record[image_key]))
            except CorruptImageError as error:
                problem = f"{where}: its {image_key} cannot be decoded ({error.__cause__})"
        if problem is None:
            return self.transform(image), caption, image_id(record["__url__"], record["__key__"])
        if not self.skip_bad:
            raise DataError(f"The {problem}; fix the shard or set data.source.skip_bad=true.")
        log.warning("Skipped the %s.", problem)
        return None

    def __iter__(self) -> Iterator[tuple[Tensor, str, int]]:
        self.epoch += 1
        for record in self.records(self.epoch):
            item = self.decode(record)
            if item is not None:
                yield item
