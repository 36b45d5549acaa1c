"""The byte-level BPE tokenizer of CLIP's text encoder (Radford et al. 2021, sec. 2.4).

Byte-pair encoding (Sennrich et al. 2016) over UTF-8 bytes rather than characters (GPT-2,
Radford et al. 2019), so that any text has a tokenization and none is ``<unk>``. Two kinds,
both run by the Rust ``tokenizers`` library:

* ``trained`` (:meth:`BPETokenizer.train`): merges learnt from the training captions, with
  GPT-2's pre-tokenizer (each word carries its leading space), so decoding gives back the
  cleaned text exactly.
* ``clip`` (:meth:`BPETokenizer.clip`): CLIP's released 49,152-merge vocabulary as open_clip
  ships it (``bpe_simple_vocab_16e6.txt.gz``), with CLIP's pre-tokenizer and ``</w>``
  end-of-word suffix; its ids are those of ``open_clip.tokenize`` (needs the ``open_clip_torch``
  package, a test and benchmark extra), so converted pretrained CLIP weights read them. Its
  decoding puts a space after every word and punctuation mark, as CLIP's does.

Text is cleaned first as CLIP cleans it: NFC, HTML entities unescaped (twice), every run of
whitespace one space, stripped, lower-cased (:func:`clean`; CLIP also runs ``ftfy``, which
only repairs mis-decoded text and is left out). A sequence is ``<start_of_text>``, the text's
tokens, ``<end_of_text>``, then ``<pad>`` (id 0) up to the context length; a longer one is cut
and its last position made ``<end_of_text>`` (CLIP's truncation). The two markers are the last
two ids of the vocabulary, so ``tokens.argmax(-1)`` finds the end token, as CLIP's text
encoder does to read its features.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

from glimpse.errors import ConfigError, DataError

# The library parallelises within a process; a DataLoader worker forked after that prints a
# warning and turns parallelism off. Off from the start unless the user chose.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAD, START, END = "<pad>", "<start_of_text>", "<end_of_text>"
KINDS = ("trained", "clip")
#: CLIP's context length.
CONTEXT_LENGTH = 77
#: CLIP's pre-tokenizer: contractions, letter runs, single digits, other non-space runs.
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
#: CLIP's merges: the file's lines after its header, 49,152 - 256 - 2 of them.
CLIP_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"
#: The merges file in the open_clip_torch package.
CLIP_MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"


def clean(text: str) -> str:
    """CLIP's text cleaning (without ``ftfy``): NFC, HTML entities unescaped twice, whitespace
    runs made one space, stripped, lower-cased."""
    text = html.unescape(html.unescape(unicodedata.normalize("NFC", text)))
    return " ".join(text.split()).lower()


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins of the 256 byte values, in CLIP's vocabulary order: the bytes
    that are printable characters as themselves first, then the others as ``chr(256 + n)``
    (CLIP's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = 256 - len(printable)
    return [*map(chr, printable), *(chr(256 + n) for n in range(others))]


class BPETokenizer:
    """Text <-> token ids for CLIP (see the module docstring).

    Build one with :meth:`train`, :meth:`clip` or :meth:`from_dict`; ``to_dict()`` is the
    plain form kept in :attr:`DataSpec.tokenizer <glimpse.data.spec.DataSpec>` and so in
    checkpoints.

    Attributes:
        kind: ``trained`` or ``clip``.
        pad_id: 0, the id sequences are padded with.
        start_id, end_id: ``<start_of_text>`` and ``<end_of_text>``, the two largest ids.
    """

    pad_id = 0

    def __init__(self, tokenizer: Tokenizer, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"Unknown BPE tokenizer kind {kind!r}; use one of {KINDS}.")
        self.tokenizer, self.kind = tokenizer, kind
        self.start_id = tokenizer.token_to_id(START)
        self.end_id = tokenizer.token_to_id(END)
        if (self.start_id, self.end_id) != (self.vocab_size - 2, self.vocab_size - 1):
            raise ValueError(
                f"{START} and {END} must be the last two of the {self.vocab_size} ids, not "
                f"{self.start_id} and {self.end_id}."
            )

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2
    ) -> BPETokenizer:
        """Learn merges from ``texts`` (cleaned first) until the vocabulary holds ``vocab_size``
        ids (the 256 bytes, ``<pad>``, the merges and the two markers) or no pair of tokens
        occurs ``min_frequency`` times. The same texts give the same tokenizer in any
        process."""
        smallest = 256 + 3
        if vocab_size < smallest:
            raise ConfigError(
                f"data.vocab_size={vocab_size} is too small: the bytes and special tokens "
                f"alone take {smallest} ids."
            )
        if min_frequency < 1:
            raise ConfigError(f"data.min_frequency={min_frequency} must be at least 1.")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 2,
            min_frequency=min_frequency,
            special_tokens=[PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator((clean(text) for text in texts), trainer)
        tokenizer.add_special_tokens([START, END])
        return cls(tokenizer, "trained")

    @classmethod
    def clip(cls, merges_file: str | os.PathLike | None = None) -> BPETokenizer:
        """CLIP's released vocabulary of 49,408 ids from ``merges_file``, by default the copy
        in the ``open_clip_torch`` package (``bpe_simple_vocab_16e6.txt.gz``)."""
        if merges_file is None:
            package = importlib.util.find_spec("open_clip")
            if package is None or package.origin is None:
                raise ImportError(
                    "data.tokenizer=clip reads CLIP's vocabulary from the open_clip_torch "
                    "package; install it (pip install open_clip_torch) or train one with "
                    "data.tokenizer=train."
                )
            merges_file = Path(package.origin).parent / CLIP_MERGES_FILE
        with gzip.open(merges_file, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : CLIP_MERGES + 1]]
        symbols = byte_symbols()
        symbols = [*symbols, *(s + END_OF_WORD for s in symbols)]
        vocab = [*symbols, *("".join(m) for m in merges), START, END]
        model = models.BPE(
            {t: i for i, t in enumerate(vocab)}, merges, end_of_word_suffix=END_OF_WORD
        )
        tokenizer = Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([START, END])
        return cls(tokenizer, "clip")

    @property
    def vocab_size(self) -> int:
        """Ids in use, 0 .. ``vocab_size - 1`` (the text encoder's embedding rows)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> Tensor:
        """Token ids ``(B, context_length)`` int64 of ``B`` texts (one string: ``B = 1``):
        ``<start_of_text>``, the cleaned text's tokens, ``<end_of_text>``, zeros. A text too
        long keeps its first ``context_length - 2`` tokens, then the end token."""
        if context_length < 2:
            raise ValueError(f"context_length={context_length} leaves no room for the markers.")
        texts = [texts] if isinstance(texts, str) else list(texts)
        encodings = self.tokenizer.encode_batch([clean(t) for t in texts], add_special_tokens=False)
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids = [self.start_id, *encoding.ids[: context_length - 2], self.end_id]
            result[row, : len(ids)] = torch.tensor(ids)
        return result

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of one id sequence ``(L,)``: what lies between the start marker (if first)
        and the first end marker (or the end); padding after the end marker is ignored."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
        if ids and ids[0] == self.start_id:
            ids = ids[1:]
        if self.end_id in ids:
            ids = ids[: ids.index(self.end_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if self.kind == "clip":
            text = text.replace(END_OF_WORD, " ")
        return text.strip()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: the kind and the library's own JSON of the whole tokenizer."""
        return {"type": "bpe", "kind": self.kind, "tokenizer": self.tokenizer.to_str()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BPETokenizer:
        """The tokenizer that :meth:`to_dict` described."""
        if data.get("type") != "bpe" or "tokenizer" not in data:
            raise ConfigError(
                f"Not a BPE tokenizer's dict (keys {sorted(data)}); it is made by "
                "BPETokenizer.to_dict()."
            )
        return cls(Tokenizer.from_str(data["tokenizer"]), data["kind"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (for ``data.tokenizer=<path>``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"data.tokenizer={path} is not a file; give a tokenizer written by "
                "BPETokenizer.save, or use train or clip."
            )
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as error:
            raise DataError(f"{path} is not a saved BPE tokenizer ({error}).") from error

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BPETokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
