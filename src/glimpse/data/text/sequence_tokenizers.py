"""Tokenizers of the sentence-pair data, at three levels, with one interface.

* ``word``: :class:`~glimpse.data.text.word_tokenizer.WordTokenizer`, captioning's (lower-cased
  words, punctuation dropped).
* ``char``: :class:`CharTokenizer`, every character of the text as it is (case, spaces and
  punctuation kept), as char-rnn reads text.
* ``subword``: :class:`SubwordTokenizer`, byte-level BPE (Sennrich et al. 2016) trained on the
  training split with the ``tokenizers`` library (:class:`~glimpse.data.text.bpe.BPETokenizer`).

Each has ``pad_id = 0``, ``start_id``, ``end_id``, ``words`` (every token's string, by id),
``encode(text, add_special)``, ``decode(ids)``, ``tokenize(text)`` and a plain ``to_dict()``
that :func:`tokenizer_from_dict` turns back into it, so a checkpoint holds its vocabularies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from glimpse.data.text.bpe import BPETokenizer, clean
from glimpse.data.text.word_tokenizer import WordTokenizer
from glimpse.errors import ConfigError

Level = Literal["word", "char", "subword"]
LEVELS = ("word", "char", "subword")


class CharTokenizer(WordTokenizer):
    """Characters <-> ids: ``<pad>``, ``<start>``, ``<end>``, ``<unk>``, then the training
    characters seen at least ``min_freq`` times, by descending frequency."""

    split = staticmethod(list)
    separator = ""

    def to_dict(self) -> dict[str, Any]:
        return {"level": "char", **super().to_dict()}


class SubwordTokenizer:
    """Byte-level BPE through :class:`~glimpse.data.text.bpe.BPETokenizer` (texts cleaned and
    lower-cased as CLIP's are; no text is ever ``<unk>``)."""

    pad_id = 0
    unk_id = None

    def __init__(self, bpe: BPETokenizer) -> None:
        self.bpe = bpe
        self.start_id, self.end_id = bpe.start_id, bpe.end_id
        vocab = bpe.tokenizer.get_vocab(with_added_tokens=True)
        words = [""] * bpe.vocab_size
        for token, index in vocab.items():
            words[index] = token
        self.words = tuple(words)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_freq: int = 2) -> SubwordTokenizer:
        return cls(BPETokenizer.train(texts, vocab_size=vocab_size, min_frequency=min_freq))

    def __len__(self) -> int:
        return self.bpe.vocab_size

    def tokenize(self, text: str) -> list[str]:
        return self.bpe.tokenizer.encode(clean(text), add_special_tokens=False).tokens

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = self.bpe.tokenizer.encode(clean(text), add_special_tokens=False).ids
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        return self.bpe.decode(list(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"level": "subword", **self.bpe.to_dict()}


SequenceTokenizer = WordTokenizer | CharTokenizer | SubwordTokenizer


def build_tokenizer(
    level: Level, texts: Sequence[str], min_freq: int = 1, vocab_size: int | None = None
) -> SequenceTokenizer:
    """The ``level`` tokenizer of ``texts`` (a training split); ``vocab_size`` is the subword
    vocabulary's size, ``min_freq`` the fewest occurrences that keep a word, character or
    merge."""
    if level == "word":
        return WordTokenizer.from_captions(texts, min_freq)
    if level == "char":
        return CharTokenizer.from_captions(texts, min_freq)
    if level == "subword":
        if vocab_size is None:
            raise ConfigError("data.level=subword needs data.vocab_size (e.g. 2000).")
        return SubwordTokenizer.train(texts, vocab_size, max(min_freq, 2))
    raise ConfigError(f"Unknown data.level={level!r}; choose one of {', '.join(LEVELS)}.")


def tokenizer_to_dict(tokenizer: SequenceTokenizer) -> dict[str, Any]:
    """The plain dict of any of the three (the word level's gets ``"level": "word"``)."""
    data = tokenizer.to_dict()
    return data if "level" in data else {"level": "word", **data}


def tokenizer_from_dict(data: dict[str, Any]) -> SequenceTokenizer:
    """The tokenizer :func:`tokenizer_to_dict` described."""
    level = data.get("level", "word")
    if level == "word":
        return WordTokenizer(data["words"])
    if level == "char":
        return CharTokenizer(data["words"])
    if level == "subword":
        return SubwordTokenizer(BPETokenizer.from_dict(data))
    raise ConfigError(f"Unknown tokenizer level {level!r} in a checkpoint's spec.")


__all__ = [
    "LEVELS",
    "CharTokenizer",
    "SequenceTokenizer",
    "SubwordTokenizer",
    "build_tokenizer",
    "tokenizer_from_dict",
    "tokenizer_to_dict",
]
