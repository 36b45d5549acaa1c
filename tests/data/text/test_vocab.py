"""CharVocab and DataSpec."""

from __future__ import annotations

import pytest
import torch

from glimpse.batches import TEXT
from glimpse.data.spec import DataSpec
from glimpse.data.text.vocab import UNKNOWN, CharVocab

TRAIN_TEXT = "Hello, wörld! café ─┼─ 🙂 tab\tnew\nline"


def test_round_trip_includes_non_ascii_and_astral_chars():
    vocab = CharVocab.from_text(TRAIN_TEXT)
    assert {"é", "─", "🙂"} <= set(vocab.symbols)
    text = "é─🙂 Hello\n" + TRAIN_TEXT[::-1] + "🙂🙂é"
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert vocab.decode(ids.tolist()) == text
    assert 0 not in ids.tolist()


def test_unseen_characters_encode_to_zero_and_decode_to_replacement_char():
    vocab = CharVocab.from_text("abc")
    ids = vocab.encode("aXb🚀c\u00e9")
    assert ids.tolist() == [1, 0, 2, 0, 3, 0]
    assert vocab.decode(ids) == f"a{UNKNOWN}b{UNKNOWN}c{UNKNOWN}"


def test_characters_beyond_the_largest_code_point_are_unknown():
    # "z" sorts after every symbol: searchsorted lands past the end of the table.
    vocab = CharVocab.from_text("abc")
    assert vocab.encode("z\U0010ffff").tolist() == [0, 0]


def test_from_text_sorts_by_code_point_with_unknown_first():
    vocab = CharVocab.from_text("🙂ba─é\nAb a" + UNKNOWN)
    assert vocab.symbols[0] == UNKNOWN
    rest = vocab.symbols[1:]
    assert list(rest) == sorted(set("🙂ba─é\nAb a"), key=ord)
    assert UNKNOWN not in rest
    assert len(vocab) == len(rest) + 1
    # ids follow the symbol order
    assert vocab.encode("".join(rest)).tolist() == list(range(1, len(vocab)))


def test_count_unknown_counts_characters_outside_vocab():
    vocab = CharVocab.from_text("hello")
    assert vocab.count_unknown("hello") == 0
    assert vocab.count_unknown("") == 0
    assert vocab.count_unknown("help me 🙂") == 5  # p, " ", m, " ", 🙂
    assert vocab.count_unknown("xyz") == 3
    text = "hello, world 🙂"
    assert vocab.count_unknown(text) == int((vocab.encode(text) == 0).sum())


@pytest.mark.parametrize(
    "symbols",
    [
        [],
        ["a", UNKNOWN],
        ["a", "b"],
        [UNKNOWN, "a", "a"],
        [UNKNOWN, UNKNOWN],
        [UNKNOWN, "ab"],
        [UNKNOWN, ""],
    ],
    ids=[
        "empty",
        "unknown-not-first",
        "no-unknown",
        "duplicate",
        "duplicate-unknown",
        "multi-char",
        "empty-symbol",
    ],
)
def test_invalid_vocab_raises_value_error(symbols):
    with pytest.raises(ValueError):
        CharVocab(symbols)


def test_encode_returns_int64_of_text_length():
    vocab = CharVocab.from_text(TRAIN_TEXT)
    for text in ["", "a", "🙂", TRAIN_TEXT, "x🙂y" * 7]:
        ids = vocab.encode(text)
        assert isinstance(ids, torch.Tensor)
        assert ids.dtype == torch.int64
        assert ids.shape == (len(text),)


def _assert_plain(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)


def test_data_spec_round_trips_through_plain_dict():
    vocab = CharVocab.from_text(TRAIN_TEXT)
    spec = DataSpec(
        kind=TEXT,
        vocab=vocab.symbols,
        metadata={"corpus": "text", "num_chars": 42, "split_chars": {"train": 40}, "x": 0.5},
    )
    data = spec.to_dict()
    assert set(data) == {"kind", "vocab", "metadata"}
    assert type(data["vocab"]) is list
    _assert_plain(data)
    restored = DataSpec.from_dict(data)
    assert restored == spec
    assert isinstance(restored.vocab, tuple)
    assert CharVocab(restored.vocab).symbols == vocab.symbols


def test_data_spec_without_vocab_round_trips():
    spec = DataSpec(kind=TEXT)
    data = spec.to_dict()
    assert data == {"kind": TEXT, "vocab": None, "metadata": {}}
    _assert_plain(data)
    assert DataSpec.from_dict(data) == spec
