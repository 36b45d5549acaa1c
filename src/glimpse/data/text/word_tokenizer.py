"""Word-level tokenizer for captions: text <-> word ids, with special tokens.

Rules (chosen for English caption corpora such as Flickr8k and COCO):

* Text is lower-cased.
* A token is a run of letters/digits, optionally joined by *inner* apostrophes or
  hyphens: ``"man's"``, ``"don't"`` and ``"t-shirt"`` each stay one token.
* All other punctuation is a separator and is dropped, so the standalone ``" ."`` that
  ends Flickr8k captions, commas, quotes and leading/trailing apostrophes or hyphens
  produce no tokens. ``"dog."`` and ``"dog ."`` both give ``["dog"]``.

Ids: ``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3, then the training
words with at least ``min_freq`` occurrences, by descending frequency and then
alphabetically, so the same captions always give the same vocabulary.

A tokenizer serialises with :meth:`WordTokenizer.to_dict` to a plain dict (lists of
strings and ints) that can travel in a DataSpec and in checkpoints loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

PAD = "<pad>"
START = "<start>"
END = "<end>"
UNK = "<unk>"
#: Special tokens, in id order: ``<pad>`` is 0.
SPECIALS = (PAD, START, END, UNK)

_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` under the module's punctuation rules."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Maps caption words to ids; words outside the vocabulary map to ``<unk>``.

    Subclasses change how a text is cut into tokens (:attr:`split`) and joined back
    (:attr:`separator`), e.g. :class:`~glimpse.data.text.sequence_tokenizers.CharTokenizer`.
    """

    #: Cuts a text into tokens.
    split = staticmethod(tokenize)
    #: Joins decoded tokens.
    separator = " "

    def __init__(self, words: Sequence[str]) -> None:
        """``words``: the full token list in id order, starting with :data:`SPECIALS`."""
        words = tuple(words)
        if words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"A WordTokenizer's first tokens must be {list(SPECIALS)}.")
        if len(set(words)) != len(words):
            raise ValueError("A WordTokenizer's tokens must be distinct.")
        self.words = words
        self._index = {word: i for i, word in enumerate(words)}
        self.pad_id, self.start_id, self.end_id, self.unk_id = range(len(SPECIALS))

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_freq: int = 1) -> WordTokenizer:
        """Vocabulary of the words seen at least ``min_freq`` times in ``captions``.

        Order: descending frequency, ties broken alphabetically.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}.")
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(cls.split(caption))
        kept = [w for w, n in counts.items() if n >= min_freq and w not in SPECIALS]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.words == other.words

    def __hash__(self) -> int:
        return hash(self.words)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} tokens)"

    def tokenize(self, text: str) -> list[str]:
        """Lower-cased word tokens of ``text`` (see the module docstring for the rules)."""
        return self.split(text)

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Word ids of ``text``; with ``add_special``, wrapped in ``<start>`` ... ``<end>``."""
        ids = [self._index.get(word, self.unk_id) for word in self.split(text)]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        """The tokens of ``ids`` joined by :attr:`separator` (a space for words).

        With ``strip_special``, decoding stops at the first ``<end>`` and ``<pad>``
        and ``<start>`` are left out; ``<unk>`` is always kept, as it stands for a word.
        """
        words: list[str] = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == self.end_id:
                    break
                if i in (self.pad_id, self.start_id):
                    continue
            words.append(self.words[i])
        return self.separator.join(words)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict: ``{"words": [...]}`` in id order (specials included)."""
        return {"words": list(self.words)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["words"])
