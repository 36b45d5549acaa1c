"""Character-level text corpora as a LightningDataModule."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from torch import Tensor
from torch.utils.data import DataLoader

from glimpse.batches import TEXT
from glimpse.data.base import SPLITS, GlimpseDataModule
from glimpse.data.download import download_file, verify_file
from glimpse.data.spec import DataSpec
from glimpse.data.text.corpora import (
    SHAKESPEARE_MD5,
    SHAKESPEARE_URL,
    python_stdlib_text,
    read_text_file,
    sha256_text,
)
from glimpse.data.text.streams import RandomWindows, StreamBatches, StreamLoader
from glimpse.data.text.vocab import CharVocab
from glimpse.errors import ConfigError

log = logging.getLogger(__name__)


class CharTextDataModule(GlimpseDataModule):
    """A character corpus split into contiguous train/val/test spans.

    Args:
        corpus: ``"shakespeare"`` (downloaded to ``data_dir``), ``"text"`` (the UTF-8 file at
            ``path``) or ``"pystdlib"`` (the Python standard library's source; offline).
        data_dir: where downloaded corpora are kept.
        root: for ``shakespeare``, a folder that already holds its ``input.txt`` (checked by
            md5, never downloaded into); None downloads it into ``data_dir/tinyshakespeare``.
        path: the file for ``corpus="text"``.
        url, md5: where ``shakespeare`` comes from and its checksum.
        seq_len: T, characters per training sequence.
        batch_size: B, sequences per batch (per device).
        batching: ``"stream"`` carries hidden state across batches (truncated BPTT, see
            :class:`~glimpse.data.text.streams.StreamBatches`); ``"windows"`` draws independent
            random windows for training and scores val/test in consecutive windows.
        windows_per_epoch: training windows per epoch in ``"windows"`` mode (default: as
            many as cover the training text once).
        splits: fractions of the text for train, val and test, in that order of the text.
        num_workers: DataLoader workers for ``"windows"`` (streams are sliced in memory).
    """

    KIND = TEXT

    def __init__(
        self,
        corpus: Literal["shakespeare", "text", "pystdlib"] = "pystdlib",
        data_dir: str = "data",
        root: str | None = None,
        path: str | None = None,
        url: str = SHAKESPEARE_URL,
        md5: str | None = SHAKESPEARE_MD5,
        seq_len: int = 128,
        batch_size: int = 64,
        batching: Literal["stream", "windows"] = "stream",
        windows_per_epoch: int | None = None,
        splits: tuple[float, float, float] = (0.9, 0.05, 0.05),
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers)
        if corpus not in ("shakespeare", "text", "pystdlib"):
            raise ConfigError(f"Unknown data.corpus={corpus!r}; use shakespeare, text or pystdlib.")
        if corpus == "text" and not path:
            raise ConfigError("data.corpus=text needs data.path=/path/to/file.txt.")
        if batching not in ("stream", "windows"):
            raise ConfigError(f"Unknown data.batching={batching!r}; use stream or windows.")
        if len(splits) != 3 or any(f <= 0 for f in splits) or abs(sum(splits) - 1) > 1e-6:
            raise ConfigError(
                f"data.splits={list(splits)} must be three positive fractions summing to 1."
            )
        self.corpus = corpus
        self.data_dir = Path(data_dir)
        self.root = Path(root) if root else None
        self.path = Path(path) if path else None
        self.url, self.md5 = url, md5
        self.seq_len = seq_len
        self.batching = batching
        self.windows_per_epoch = windows_per_epoch
        self.splits = tuple(splits)
        self.vocab: CharVocab | None = None
        self.tokens: dict[str, Tensor] = {}

    @property
    def corpus_file(self) -> Path | None:
        """The file the corpus is read from (None for ``pystdlib``)."""
        if self.corpus == "shakespeare":
            return (self.root or self.data_dir / "tinyshakespeare") / "input.txt"
        return self.path

    def prepare_data(self) -> None:
        """Download tiny-shakespeare if needed (or check the copy in ``root``); check that a
        ``text`` file exists."""
        if self.corpus == "shakespeare" and self.root is not None:
            read_text_file(self.corpus_file)
            verify_file(self.corpus_file, self.md5)
        elif self.corpus == "shakespeare":
            download_file(self.url, self.corpus_file, md5=self.md5)
        elif self.corpus == "text":
            read_text_file(self.path)

    def _read_corpus(self) -> str:
        if self.corpus == "pystdlib":
            return python_stdlib_text()
        return read_text_file(self.corpus_file)

    def setup(self, stage: str | None = None) -> None:
        """Split the text, build the vocabulary from the training span and encode each split.

        Lightning calls this again inside ``Trainer.fit``; the corpus is then not read again,
        only the split lengths are checked against the world size now known.
        """
        if self._spec is not None:
            self._check_lengths(self._spec.metadata["split_chars"])
            return
        text = self._read_corpus()
        bounds = [0]
        for fraction in self.splits:
            bounds.append(bounds[-1] + round(fraction * len(text)))
        bounds[-1] = len(text)
        parts = {name: text[bounds[i] : bounds[i + 1]] for i, name in enumerate(SPLITS)}
        self.vocab = CharVocab.from_text(parts["train"])
        self._check_lengths({name: len(part) for name, part in parts.items()})
        self.tokens = {name: self.vocab.encode(part) for name, part in parts.items()}
        unknown = {name: self.vocab.count_unknown(parts[name]) for name in ("val", "test")}
        if any(unknown.values()):
            log.info("Characters unseen in training map to the unknown symbol: %s", unknown)
        digest = sha256_text(text)
        log.info(
            "Corpus %s (%s): %d characters, sha256 %s; vocabulary of %d symbols",
            self.corpus,
            self._spec_source(),
            len(text),
            digest,
            len(self.vocab),
        )
        self._spec = DataSpec(
            kind=TEXT,
            vocab=self.vocab.symbols,
            metadata={
                "corpus": self.corpus,
                "source": self._spec_source(),
                "num_chars": len(text),
                "sha256": digest,
                "split_chars": {name: len(part) for name, part in parts.items()},
                "batching": self.batching,
                "seq_len": self.seq_len,
            },
        )

    def _spec_source(self) -> str:
        return str(self.corpus_file) if self.corpus_file else "python stdlib"

    def _check_lengths(self, lengths: dict[str, int]) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        streams = world_size * self.batch_size if self.batching == "stream" else 1
        for name, length in lengths.items():
            needed = streams * (self.seq_len + 1)
            if length < needed:
                raise ConfigError(
                    f"data.seq_len={self.seq_len} is too long for the {name} split of "
                    f"{self.corpus} ({length} characters; {streams} stream(s) of "
                    f"seq_len + 1 need {needed}); lower data.seq_len or data.batch_size."
                )

    def split_loader(self, split: str) -> DataLoader | StreamLoader:
        tokens = self.tokens[split]
        if self.batching == "stream":
            rank = self.trainer.global_rank if self.trainer is not None else 0
            world_size = self.trainer.world_size if self.trainer is not None else 1
            batches = StreamBatches(tokens, self.batch_size, self.seq_len, rank, world_size)
            log.info(
                "%s split: %d streams x %d batches of %d characters per rank; %d characters "
                "left over",
                split,
                self.batch_size * world_size,
                len(batches),
                self.seq_len,
                batches.unused,
            )
            if split == "train" and self.trainer is not None:
                progress = self.trainer.fit_loop.epoch_loop.batch_progress
                return StreamLoader(batches, lambda: progress.current.completed)
            return StreamLoader(batches)
        train = split == "train"
        windows = RandomWindows(
            tokens, self.seq_len, self.windows_per_epoch if train else None, random=train
        )
        return DataLoader(
            windows,
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
