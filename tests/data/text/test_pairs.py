"""The sentence-pair datamodule on the real Tatoeba sample and on written files with every kind of
bad line; its tokenizers at the three levels."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

from glimpse.batches import SentencePairs
from glimpse.data.formats.sentence_pairs import read_sentence_pairs
from glimpse.data.spec import DataSpec
from glimpse.data.text.pairs import SentencePairDataModule
from glimpse.data.text.sequence_tokenizers import (
    CharTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
    tokenizer_to_dict,
)
from glimpse.errors import ConfigError, DataError, MissingFileError

TATOEBA = SHARED_DATA / "tatoeba_eng_fra" / "eng-fra.txt"
needs_tatoeba = pytest.mark.skipif(not TATOEBA.is_file(), reason="no ../shared/data sample")


def write_pairs(path: Path, count: int = 40, translations: int = 2) -> Path:
    """``count`` sources ``"s<i> go"``, each with ``translations`` targets ``"t<i> v<k> va"``,
    a third attribution column on every line."""
    lines = [
        f"s{i} go\tt{i} v{k} va\tCC-BY #{i}" for i in range(count) for k in range(translations)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _module(path: Path, **kwargs) -> SentencePairDataModule:
    module = SentencePairDataModule(str(path), **kwargs)
    module.prepare_data()
    module.setup("fit")
    return module


def _sources(module: SentencePairDataModule, split: str) -> set[str]:
    return {group.text for group in module.datasets[split].groups}


@needs_tatoeba
def test_the_tatoeba_sample_splits_by_source_with_vocabularies_from_train():
    module = _module(TATOEBA)
    spec = module.spec
    meta = spec.metadata
    assert meta["pairs_read"] == 5000 and meta["bad_lines"] == 0
    assert sum(meta["splits"][s]["pairs"] for s in ("train", "val", "test")) == 5000
    sources = {split: _sources(module, split) for split in ("train", "val", "test")}
    assert sum(meta["splits"][s]["sources"] for s in sources) == 2597  # distinct English sentences
    assert not (sources["train"] & sources["val"] or sources["train"] & sources["test"])
    assert not sources["val"] & sources["test"]
    assert "Go." in set().union(*sources.values())
    # Every translation of a source is in its split: "Go." has three in the file.
    split_of_go = next(s for s in sources if "Go." in sources[s])
    if split_of_go == "train":
        targets = {g.references[0] for g in module.datasets["train"].groups if g.text == "Go."}
    else:
        (group,) = [g for g in module.datasets[split_of_go].groups if g.text == "Go."]
        targets = set(group.references)
    assert targets == {"Va !", "Marche.", "Bouge !"}
    # Vocabularies come from the training split only: a word seen only outside it is unknown.
    target = tokenizer_from_dict(spec.tokenizer["target"])
    train_words = {
        w for g in module.datasets["train"].groups for w in target.tokenize(g.references[0])
    }
    held_out = {
        w
        for s in ("val", "test")
        for g in module.datasets[s].groups
        for r in g.references
        for w in target.tokenize(r)
    }
    unseen = held_out - train_words
    assert unseen and not unseen & set(target.words)
    assert train_words <= set(target.words)
    # The spec alone rebuilds both tokenizers (a checkpoint translates without the file).
    rebuilt = DataSpec.from_dict(spec.to_dict())
    assert (
        tokenizer_from_dict(rebuilt.tokenizer["source"]).words
        == tokenizer_from_dict(spec.tokenizer["source"]).words
    )


@needs_tatoeba
def test_tatoeba_evaluation_batches_hold_every_translation_of_each_source():
    module = _module(TATOEBA, batch_size=16)
    batch = next(iter(module.val_dataloader()))
    assert isinstance(batch, SentencePairs)
    assert batch.sources.shape[0] == 16 == len(batch.texts) == len(batch.references)
    counts = torch.bincount(batch.target_source, minlength=16)
    assert counts.tolist() == [len(refs) for refs in batch.references]
    target = tokenizer_from_dict(module.spec.tokenizer["target"])
    known = set(target.words)
    for row, owner in enumerate(batch.target_source.tolist()):
        reference = batch.references[owner][row - batch.target_source.tolist().index(owner)]
        words = [w if w in known else "<unk>" for w in target.tokenize(reference)]
        assert target.decode(batch.targets[row].tolist()) == " ".join(words)


def test_padded_batches_carry_lengths_and_specials(tmp_path):
    module = _module(write_pairs(tmp_path / "pairs.tsv"), batch_size=8)
    batch = next(iter(module.train_dataloader()))
    source_tok = tokenizer_from_dict(module.spec.tokenizer["source"])
    target_tok = tokenizer_from_dict(module.spec.tokenizer["target"])
    assert batch.targets.shape[0] == batch.sources.shape[0] == 8
    assert batch.target_source.tolist() == list(range(8))
    for row in range(8):
        s_len, t_len = int(batch.source_lengths[row]), int(batch.target_lengths[row])
        assert batch.sources[row, s_len - 1] == source_tok.end_id
        assert (batch.sources[row, s_len:] == 0).all()
        assert batch.targets[row, 0] == target_tok.start_id
        assert batch.targets[row, t_len - 1] == target_tok.end_id
        assert (batch.targets[row, t_len:] == 0).all()
        assert target_tok.decode(batch.targets[row].tolist()) == batch.references[row][0]


def test_the_split_is_seeded_and_keeps_translations_together(tmp_path):
    path = write_pairs(tmp_path / "pairs.tsv", count=50, translations=3)
    first, again = _module(path, seed=1), _module(path, seed=1)
    other = _module(path, seed=2)
    assert _sources(first, "test") == _sources(again, "test")
    assert _sources(first, "test") != _sources(other, "test")
    assert len(_sources(first, "val")) == len(_sources(first, "test")) == 5
    for group in first.datasets["val"].groups:
        assert len(group.references) == 3
    assert first.spec.metadata["splits"]["train"] == {"pairs": 120, "sources": 40}


def test_every_kind_of_bad_line_is_counted_and_named_not_fatal(tmp_path, caplog):
    path = tmp_path / "messy.tsv"
    good = [f"s{i} go\tt{i} va".encode() for i in range(20)]
    bad = [
        b"only one column",
        b"   \tun texte sans source",
        b"a source without target\t   ",
        b"caf\xe9 latin-1\tcaf\xc3\xa9",
        b"",
    ]
    lines = good[:5] + bad + good[5:]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING):
        module = _module(path)
    meta = module.spec.metadata
    assert meta["pairs_read"] == 20 and meta["bad_lines"] == 5
    assert meta["bad_line_examples"] == [
        "line 6 (1 column, 2 needed)",
        "line 7 (empty source)",
        "line 8 (empty target)",
        "line 9 (not valid UTF-8 at byte 3)",
        "line 10 (blank)",
    ]
    message = caplog.text
    assert str(path) in message and "5 bad lines skipped: line 6 (1 column, 2 needed)" in message


def test_a_file_without_any_pair_and_a_missing_file_fail_in_one_sentence(tmp_path):
    empty = tmp_path / "nothing.tsv"
    empty.write_text("one column only\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no sentence pairs.*2 bad lines skipped"):
        read_sentence_pairs(empty)
    with pytest.raises(MissingFileError, match="nowhere.tsv does not exist; set data.path"):
        _module(tmp_path / "nowhere.tsv")
    with pytest.raises(ConfigError, match="needs data.path="):
        SentencePairDataModule(None)


def test_csv_files_with_a_header_and_quoted_commas(tmp_path):
    path = tmp_path / "pairs.csv"
    rows = ["english,french"] + [f'"Hello, {i}.","Bonjour, {i}."' for i in range(12)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    module = _module(path, header=True, level="char")
    texts = _sources(module, "train") | _sources(module, "val") | _sources(module, "test")
    assert texts == {f"Hello, {i}." for i in range(12)}
    assert module.spec.metadata["bad_lines"] == 0


def test_max_len_drops_long_pairs_counts_and_logs_them(tmp_path, caplog):
    path = tmp_path / "pairs.tsv"
    lines = [f"s{i} go\tt{i} va" for i in range(30)]
    lines += [f"long {i} source sentence here\tcourt" for i in range(6)]
    lines += [f"short {i}\tune cible beaucoup trop longue {i}" for i in range(6)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        module = _module(path, max_len=3)
    dropped = module.spec.metadata["dropped_by_max_len"]
    assert sum(dropped.values()) == 12
    for split in ("train", "val", "test"):
        for group in module.datasets[split].groups:
            assert len(group.source) - 1 <= 3 and all(len(t) - 2 <= 3 for t in group.targets)
    assert "data.max_len=3 dropped pairs with a longer side" in caplog.text
    with pytest.raises(DataError, match="data.max_len=1 leaves no training pair"):
        _module(path, max_len=1)


def test_char_and_subword_levels_round_trip_their_text(tmp_path):
    texts = ["Je suis là.", "Tu es où ?", "Il fait froid."] * 5
    char = build_tokenizer("char", texts)
    assert isinstance(char, CharTokenizer)
    assert char.decode(char.encode("Je suis où ?")) == "Je suis où ?"
    assert char.tokenize("Tu") == ["T", "u"]
    assert tokenizer_from_dict(tokenizer_to_dict(char)) == char
    subword = build_tokenizer("subword", texts, vocab_size=300)
    ids = subword.encode("Il fait froid.")
    assert ids[0] == subword.start_id and ids[-1] == subword.end_id
    assert subword.decode(ids) == "il fait froid."
    assert tokenizer_from_dict(tokenizer_to_dict(subword)).encode("tu es") == subword.encode(
        "tu es"
    )
    with pytest.raises(ConfigError, match="data.level=subword needs data.vocab_size"):
        build_tokenizer("subword", texts)
    with pytest.raises(ConfigError, match="Unknown data.level='bytes'"):
        build_tokenizer("bytes", texts)


def test_the_word_level_is_captionings_tokenizer(tmp_path):
    word = build_tokenizer("word", ["Je suis là.", "Tu es là !"])
    assert word.tokenize("Je suis LÀ !") == ["je", "suis", "là"]
    assert tokenizer_to_dict(word)["level"] == "word"
    assert word.decode(word.encode("tu es là")) == "tu es là"
