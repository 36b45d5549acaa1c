"""WordTokenizer: punctuation rules, vocabulary, encode/decode, serialisation."""

from __future__ import annotations

import io
import json

import pytest
import torch

from glimpse.data.text.word_tokenizer import END, PAD, SPECIALS, START, UNK, WordTokenizer, tokenize

CAPTIONS = [
    "A dog runs on the grass .",
    "A black dog is running , jumping .",
    "The man's dog wears a t-shirt !",
    "a DOG and a cat",
]


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog runs on the grass .") == ["a", "dog", "runs", "on", "the", "grass"]
    assert tokenize("Dog.") == tokenize("dog .") == ["dog"]
    assert tokenize('He said, "hi!" (loudly)') == ["he", "said", "hi", "loudly"]


def test_tokenize_keeps_inner_apostrophes_and_hyphens():
    assert tokenize("The man's T-shirt isn't red") == ["the", "man's", "t-shirt", "isn't", "red"]
    assert tokenize("'quoted' -dash- dogs'") == ["quoted", "dash", "dogs"]
    assert tokenize(" . , ! ") == []


def test_special_ids():
    tok = WordTokenizer.from_captions(CAPTIONS)
    assert tok.words[:4] == SPECIALS == (PAD, START, END, UNK)
    assert (tok.pad_id, tok.start_id, tok.end_id, tok.unk_id) == (0, 1, 2, 3)


def test_round_trip():
    tok = WordTokenizer.from_captions(CAPTIONS)
    ids = tok.encode("The man's dog runs on the grass .")
    assert ids[0] == tok.start_id and ids[-1] == tok.end_id
    assert tok.decode(ids) == "the man's dog runs on the grass"
    assert tok.decode(tok.encode("a dog", add_special=False)) == "a dog"
    assert tok.encode("a dog", add_special=False) == ids_of(tok, "a", "dog")
    assert tok.decode(ids, strip_special=False) == "<start> the man's dog runs on the grass <end>"


def ids_of(tok: WordTokenizer, *words: str) -> list[int]:
    return [tok.words.index(w) for w in words]


def test_decode_stops_at_end_and_skips_pad():
    tok = WordTokenizer.from_captions(CAPTIONS)
    ids = [tok.start_id, *ids_of(tok, "a", "dog"), tok.end_id, *ids_of(tok, "cat"), 0, 0]
    assert tok.decode(ids) == "a dog"
    assert tok.decode(torch.tensor(ids)) == "a dog"


def test_min_freq_and_unk():
    tok = WordTokenizer.from_captions(CAPTIONS, min_freq=2)
    # "a" x5, "dog" x4, "the" x2; everything else once.
    assert tok.words[len(SPECIALS) :] == ("a", "dog", "the")
    assert len(tok) == 7
    assert tok.encode("A cat and a zebra", add_special=False) == [4, 3, 3, 4, 3]
    assert tok.decode(tok.encode("A cat")) == "a <unk>"
    with pytest.raises(ValueError):
        WordTokenizer.from_captions(CAPTIONS, min_freq=0)


def test_order_is_by_frequency_then_alphabetical_and_deterministic():
    tok = WordTokenizer.from_captions(CAPTIONS)
    words = tok.words[len(SPECIALS) :]
    assert words[:3] == ("a", "dog", "the")
    ones = words[3:]
    assert list(ones) == sorted(ones)
    assert WordTokenizer.from_captions(reversed(CAPTIONS)).words == tok.words


def test_to_dict_from_dict_round_trip_via_json_and_torch_weights_only():
    tok = WordTokenizer.from_captions(CAPTIONS, min_freq=1)
    data = tok.to_dict()
    assert WordTokenizer.from_dict(json.loads(json.dumps(data))) == tok
    buf = io.BytesIO()
    torch.save({"tokenizer": data}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["tokenizer"]
    restored = WordTokenizer.from_dict(loaded)
    assert restored == tok and len(restored) == len(tok)
    assert restored.encode("the dog") == tok.encode("the dog")


def test_rejects_bad_token_lists():
    with pytest.raises(ValueError, match="first tokens"):
        WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        WordTokenizer([*SPECIALS, "a", "a"])
