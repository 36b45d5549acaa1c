"""Sentence pairs for translation as a LightningDataModule: ``data=text_pairs data.path=FILE``.

The file (:mod:`glimpse.data.formats.sentence_pairs`) is split by *source sentence*: the distinct
sources are shuffled with ``seed`` and cut into train/val/test, so every translation of one
source lands in the same split (Tatoeba lists "Go." with three French translations; none of them
may be seen in training when "Go." is tested). Source and target vocabularies
(:mod:`glimpse.data.text.sequence_tokenizers`, at the word, character or subword level) are built
from the training split only and kept in the DataSpec, so a checkpoint alone translates.

``max_len`` drops the pairs whose source or target has more tokens than that (the PyTorch
tutorial's ``MAX_LENGTH`` filter); how many it dropped per split is logged and kept in the spec,
and nothing is ever cut short. Bad lines of the file are skipped, counted and named.

Training batches hold one pair per row, shuffled; validation and test batches hold each source
once with all its translations, the references of BLEU and chrF (:class:`~glimpse.batches.
SentencePairs`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from glimpse.batches import SENTENCE_PAIRS, SentencePairs
from glimpse.data.base import SPLITS, GlimpseDataModule
from glimpse.data.download import file_digest
from glimpse.data.formats.pair_files import seeded_split
from glimpse.data.formats.sentence_pairs import read_sentence_pairs
from glimpse.data.spec import DataSpec
from glimpse.data.text.sequence_tokenizers import (
    Level,
    SequenceTokenizer,
    build_tokenizer,
    tokenizer_to_dict,
)
from glimpse.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class PairGroup(NamedTuple):
    """One dataset item: a source and the targets of it that the item holds (one in training,
    all of them in evaluation)."""

    source: Tensor
    targets: tuple[Tensor, ...]
    text: str
    references: tuple[str, ...]


class PairGroups(Dataset):
    """A list of :class:`PairGroup` as a map-style dataset."""

    def __init__(self, groups: Sequence[PairGroup]) -> None:
        self.groups = list(groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> PairGroup:
        return self.groups[index]


def collate_pairs(groups: Sequence[PairGroup]) -> SentencePairs:
    """Pad the sources and targets of ``groups`` with 0 into one :class:`SentencePairs`."""
    targets = [target for group in groups for target in group.targets]
    owner = [index for index, group in enumerate(groups) for _ in group.targets]
    return SentencePairs(
        sources=pad_sequence([g.source for g in groups], batch_first=True),
        source_lengths=torch.tensor([len(g.source) for g in groups]),
        targets=pad_sequence(targets, batch_first=True),
        target_lengths=torch.tensor([len(t) for t in targets]),
        target_source=torch.tensor(owner),
        references=tuple(g.references for g in groups),
        texts=tuple(g.text for g in groups),
    )


class SentencePairDataModule(GlimpseDataModule):
    """Translation pairs from one TSV or CSV file.

    Args:
        path: the file (``source<TAB>target[<TAB>anything]`` lines; ``.csv`` files are CSV).
        level: ``"word"``, ``"char"`` or ``"subword"`` tokens, for both sides.
        source_column, target_column: the columns holding each side, from 0 (swap them to
            translate the other way).
        delimiter: the column separator; None picks it by the file's suffix.
        header: the first line names the columns and is skipped.
        max_len: drop pairs with a side longer than this many tokens (specials not counted);
            None keeps every pair.
        min_freq: the fewest training occurrences that keep a token in a vocabulary (rarer ones
            become ``<unk>``; the subword level's merges need at least 2).
        vocab_size: the subword vocabulary's size (``level="subword"`` only).
        val_fraction, test_fraction: shares of the distinct sources in val and test.
        seed: the split's shuffle.
        batch_size: pairs per training batch; sources per evaluation batch.
        num_workers: DataLoader workers.
    """

    KIND = SENTENCE_PAIRS

    def __init__(
        self,
        path: str | None = None,
        level: Level = "word",
        source_column: int = 0,
        target_column: int = 1,
        delimiter: str | None = None,
        header: bool = False,
        max_len: int | None = None,
        min_freq: int = 1,
        vocab_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers=num_workers)
        if not path:
            raise ConfigError(
                "data=text_pairs needs data.path=/path/to/pairs.tsv, a file of "
                "source<TAB>target lines (e.g. Tatoeba's eng-fra.txt)."
            )
        if max_len is not None and max_len < 1:
            raise ConfigError(f"data.max_len={max_len} must be at least 1 token, or null.")
        self.path = Path(path)
        self.level = level
        self.columns = (source_column, target_column)
        self.delimiter, self.header = delimiter, header
        self.max_len, self.min_freq, self.vocab_size = max_len, min_freq, vocab_size
        self.fractions = (val_fraction, test_fraction)
        self.seed = seed
        self.datasets: dict[str, PairGroups] = {}

    def prepare_data(self) -> None:
        """Nothing to download; the file is read (and checked) in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Read the file, split it by source, build the vocabularies from the training split,
        filter by ``max_len`` and encode every split (once; later calls return)."""
        if self._spec is not None:
            return
        read = read_sentence_pairs(self.path, *self.columns, self.delimiter, self.header)
        if read.bad_lines:
            log.warning("%s: %s.", self.path, read.describe_bad_lines())
        by_source: dict[str, list[str]] = {}
        for source, target in read.pairs:
            by_source.setdefault(source, []).append(target)
        if len(by_source) < 3:
            raise DataError(
                f"{self.path} holds {len(by_source)} distinct source sentence(s); a train, val "
                "and test split need at least 3."
            )
        names = seeded_split(list(by_source), *self.fractions, self.seed)
        train_pairs = [(s, t) for s in names["train"] for t in by_source[s]]
        source_tokenizer = build_tokenizer(
            self.level, [s for s, _ in train_pairs], self.min_freq, self.vocab_size
        )
        target_tokenizer = build_tokenizer(
            self.level, [t for _, t in train_pairs], self.min_freq, self.vocab_size
        )
        counts, dropped, longest = {}, {}, {"source": 0, "target": 0}
        for split in SPLITS:
            groups, kept, removed = self._encode(
                split, names[split], by_source, source_tokenizer, target_tokenizer
            )
            self.datasets[split] = PairGroups(groups)
            counts[split] = {"pairs": kept, "sources": len({g.text for g in groups})}
            dropped[split] = removed
            if split == "train":
                longest["source"] = max(len(g.source) - 1 for g in groups)
                longest["target"] = max(len(g.targets[0]) - 2 for g in groups)
        if self.max_len is not None:
            log.info(
                "data.max_len=%d dropped pairs with a longer side: %s (of %s)",
                self.max_len,
                dropped,
                {split: counts[split]["pairs"] + dropped[split] for split in SPLITS},
            )
        log.info(
            "%s: %d pairs of %d sources; split %s; %s vocabularies of %d source and %d target "
            "tokens",
            self.path,
            len(read.pairs),
            len(by_source),
            counts,
            self.level,
            len(source_tokenizer),
            len(target_tokenizer),
        )
        self._spec = DataSpec(
            kind=SENTENCE_PAIRS,
            tokenizer={
                "source": tokenizer_to_dict(source_tokenizer),
                "target": tokenizer_to_dict(target_tokenizer),
            },
            metadata={
                "source": str(self.path),
                "sha256": file_digest(self.path, "sha256"),
                "level": self.level,
                "columns": list(self.columns),
                "pairs_read": len(read.pairs),
                "bad_lines": len(read.bad_lines),
                "bad_line_examples": [str(bad) for bad in read.bad_lines[:10]],
                "splits": counts,
                "max_len": self.max_len,
                "dropped_by_max_len": dropped,
                "max_source_tokens": longest["source"],
                "max_target_tokens": longest["target"],
                "seed": self.seed,
            },
        )

    def _encode(
        self,
        split: str,
        sources: Sequence[str],
        by_source: dict[str, list[str]],
        source_tokenizer: SequenceTokenizer,
        target_tokenizer: SequenceTokenizer,
    ) -> tuple[list[PairGroup], int, int]:
        """The split's items (a pair each in training, a source with all its kept targets in
        evaluation), the pairs kept and the pairs ``max_len`` dropped."""
        groups: list[PairGroup] = []
        kept = removed = 0
        for text in sources:
            source_ids = source_tokenizer.encode(text, add_special=False)
            targets = [(t, target_tokenizer.encode(t)) for t in by_source[text]]
            if self.max_len is not None:
                fits = len(source_ids) <= self.max_len
                short = [(t, ids) for t, ids in targets if fits and len(ids) - 2 <= self.max_len]
                removed += len(targets) - len(short)
                targets = short
            if not targets:
                continue
            kept += len(targets)
            source = torch.tensor([*source_ids, source_tokenizer.end_id])
            encoded = [(t, torch.tensor(ids)) for t, ids in targets]
            if split == "train":
                groups += [PairGroup(source, (ids,), text, (t,)) for t, ids in encoded]
            else:
                references = tuple(t for t, _ in encoded)
                groups.append(PairGroup(source, tuple(ids for _, ids in encoded), text, references))
        if split == "train" and not groups:
            raise DataError(
                f"data.max_len={self.max_len} leaves no training pair of {self.path}; raise it "
                "or set it to null."
            )
        return groups, kept, removed

    def split_loader(self, split: str) -> DataLoader:
        """The split's pairs (training: shuffled, every pair; evaluation: each source once with
        all its references)."""
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=split == "train",
            collate_fn=collate_pairs,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


__all__ = ["PairGroup", "PairGroups", "SentencePairDataModule", "collate_pairs"]
