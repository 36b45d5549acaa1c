"""Character vocabulary: symbols <-> integer ids, with an unknown symbol at index 0."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

#: Stands for every character that was not in the training text (U+FFFD REPLACEMENT CHARACTER).
UNKNOWN = "\ufffd"


class CharVocab:
    """Maps characters to ids; characters never seen in training map to :data:`UNKNOWN` (id 0)."""

    def __init__(self, symbols: Sequence[str]) -> None:
        if not symbols or symbols[0] != UNKNOWN:
            raise ValueError("A CharVocab's first symbol must be the unknown symbol U+FFFD.")
        if len(set(symbols)) != len(symbols) or any(len(s) != 1 for s in symbols):
            raise ValueError("A CharVocab's symbols must be distinct single characters.")
        self.symbols = tuple(symbols)
        self._index = {symbol: i for i, symbol in enumerate(self.symbols)}
        codes = np.array([ord(s) for s in self.symbols], dtype=np.int64)
        self._order = np.argsort(codes)
        self._sorted_codes = codes[self._order]

    @classmethod
    def from_text(cls, text: Iterable[str]) -> CharVocab:
        """Vocabulary of the distinct characters of ``text``, sorted by code point."""
        return cls([UNKNOWN, *sorted(set(text) - {UNKNOWN})])

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> Tensor:
        """``str`` of length N -> ``int64`` tensor ``(N,)``."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        slots = np.searchsorted(self._sorted_codes, codes).clip(max=len(self.symbols) - 1)
        known = self._sorted_codes[slots] == codes
        return torch.from_numpy(np.where(known, self._order[slots], 0).astype(np.int64))

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.symbols[i] for i in ids)

    def count_unknown(self, text: str) -> int:
        """How many characters of ``text`` are not in the vocabulary."""
        return sum(ch not in self._index for ch in text)
