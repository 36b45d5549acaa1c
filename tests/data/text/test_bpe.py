"""The byte-level BPE tokenizer: training, round trip, CLIP's sequence layout and truncation,
the plain-dict form kept in the spec, and CLIP's released vocabulary against open_clip."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from glimpse.data.text.bpe import BPETokenizer, clean

CAPTIONS = [
    "A red circle on a plain grey background .",
    "two blue squares and a green star",
    "a large yellow triangle in the top left corner",
    "a picture of a white cross, a black hexagon and an orange pentagon",
    "a purple circle above a pink square",
] * 20


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(CAPTIONS, vocab_size=400, min_frequency=2)


def test_clean_unescapes_html_collapses_whitespace_and_lower_cases():
    assert clean("  A &amp;amp; B\t\n  CAFE\u0301 ") == "a & b café"


@pytest.mark.parametrize(
    "text",
    [
        "A red circle on a plain grey background .",
        "  Unseen WORDS:   zebra,\tquokka & naïve café 東京 🙂 ",
        "numbers 3.14159 and punctuation?!;:'\"()[]",
    ],
)
def test_decode_of_encode_is_the_cleaned_text(tokenizer, text):
    ids = tokenizer.encode(text, context_length=200)[0]
    assert tokenizer.decode(ids) == clean(text)


def test_sequences_are_start_tokens_end_then_padding(tokenizer):
    tokens = tokenizer.encode(["a red circle", "a picture of a white cross"], context_length=16)
    assert tokens.shape == (2, 16) and tokens.dtype == torch.int64
    for row in tokens:
        end = int((row == tokenizer.end_id).nonzero()[0])
        assert row[0] == tokenizer.start_id
        assert (row[1:end] != 0).all() and (row[1:end] < tokenizer.start_id).all()
        assert (row[end + 1 :] == tokenizer.pad_id).all()


def test_end_token_is_the_largest_id_so_argmax_finds_it(tokenizer):
    assert (tokenizer.start_id, tokenizer.end_id) == (
        tokenizer.vocab_size - 2,
        tokenizer.vocab_size - 1,
    )
    tokens = tokenizer.encode(CAPTIONS[:5], context_length=40)
    ends = (tokens == tokenizer.end_id).float().argmax(dim=-1)
    assert torch.equal(tokens.argmax(dim=-1), ends)
    assert tokenizer.tokenizer.token_to_id("<pad>") == 0


def test_truncation_cuts_tokens_and_keeps_the_end_token(tokenizer):
    text = " ".join(["a red circle above a blue square"] * 10)
    full = tokenizer.encode(text, context_length=200)[0]
    cut = tokenizer.encode(text, context_length=12)[0]
    assert int((full != 0).sum()) > 12
    assert cut[-1] == tokenizer.end_id and int((cut == tokenizer.end_id).sum()) == 1
    assert torch.equal(cut[:11], full[:11])


def test_frequent_words_become_single_tokens_and_rare_ones_stay_split(tokenizer):
    pieces = tokenizer.tokenizer.encode(" circle quokka", add_special_tokens=False).tokens
    assert pieces[0] == "Ġcircle"
    assert len(pieces) > 2  # "quokka" was never seen


def test_vocab_size_and_min_frequency_bound_the_merges():
    small = BPETokenizer.train(CAPTIONS, vocab_size=270, min_frequency=2)
    assert small.vocab_size == 270
    once = ["zyxw vutsr"] + CAPTIONS
    strict = BPETokenizer.train(once, vocab_size=1000, min_frequency=2)
    assert strict.tokenizer.token_to_id("Ġzyxw") is None
    loose = BPETokenizer.train(once, vocab_size=1000, min_frequency=1)
    assert loose.tokenizer.token_to_id("Ġzyxw") is not None


def test_to_dict_is_json_and_from_dict_gives_an_equal_tokenizer(tokenizer, tmp_path):
    data = json.loads(json.dumps(tokenizer.to_dict()))
    again = BPETokenizer.from_dict(data)
    assert again == tokenizer and again.vocab_size == tokenizer.vocab_size
    assert torch.equal(again.encode(CAPTIONS[:5]), tokenizer.encode(CAPTIONS[:5]))
    loaded = BPETokenizer.load(tokenizer.save(tmp_path / "tok.json"))
    assert loaded == tokenizer
    assert torch.equal(pickle.loads(pickle.dumps(tokenizer)).encode("a"), tokenizer.encode("a"))


def test_training_gives_the_same_tokenizer_in_another_process(tokenizer):
    code = (
        "import json, sys\n"
        "from glimpse.data.text.bpe import BPETokenizer\n"
        "captions = json.loads(sys.stdin.read())\n"
        "print(BPETokenizer.train(captions, vocab_size=400, min_frequency=2).to_dict()"
        "['tokenizer'])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "TOKENIZERS_PARALLELISM": "true"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(CAPTIONS),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.strip() == tokenizer.to_dict()["tokenizer"]


def test_bad_settings_and_inputs_are_refused(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        BPETokenizer.train(CAPTIONS, vocab_size=100)
    with pytest.raises(ValueError, match="min_frequency=0"):
        BPETokenizer.train(CAPTIONS, min_frequency=0)
    with pytest.raises(ValueError, match="Not a BPE tokenizer's dict"):
        BPETokenizer.from_dict({"words": ["a"]})
    with pytest.raises(FileNotFoundError, match="is not a file"):
        BPETokenizer.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not a saved BPE tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="context_length=1"):
        tokenizer.encode("a", context_length=1)


# CLIP's released vocabulary -------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip", reason="open_clip_torch (a dev extra) is absent")


@pytest.fixture(scope="module")
def clip_tokenizer(open_clip) -> BPETokenizer:
    return BPETokenizer.clip()


CLIP_TEXTS = [
    "a photo of a cat.",
    "A Photo of THE Eiffel Tower, at night!",
    "don't stop: it's 2021 -- naïve café 東京 🙂",
    "  many   spaces\tand\nnewlines ",
    "3.14159 $%^&*() antidisestablishmentarianism",
    " ".join(["a diagram of a long caption"] * 30),
]


def test_clip_vocabulary_gives_open_clips_tokens(clip_tokenizer, open_clip):
    assert clip_tokenizer.vocab_size == 49408
    assert (clip_tokenizer.start_id, clip_tokenizer.end_id) == (49406, 49407)
    assert torch.equal(clip_tokenizer.encode(CLIP_TEXTS), open_clip.tokenize(CLIP_TEXTS))
    assert torch.equal(
        clip_tokenizer.encode(CLIP_TEXTS, context_length=12),
        open_clip.tokenize(CLIP_TEXTS, context_length=12),
    )


def test_clip_vocabulary_decodes_as_open_clip_and_survives_to_dict(clip_tokenizer, open_clip):
    reference = open_clip.tokenizer.SimpleTokenizer()
    ids = clip_tokenizer.encode("A photo of a cat.")[0]
    inner = [int(i) for i in ids if 0 < i < clip_tokenizer.start_id]
    assert clip_tokenizer.decode(ids) == reference.decode(inner).strip() == "a photo of a cat ."
    again = BPETokenizer.from_dict(clip_tokenizer.to_dict())
    assert again.kind == "clip" and torch.equal(
        again.encode(CLIP_TEXTS), clip_tokenizer.encode(CLIP_TEXTS)
    )
