"""CharTextDataModule on small generated files, the offline stdlib corpus and tiny-shakespeare."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

from glimpse.batches import TEXT
from glimpse.data.download import DownloadError
from glimpse.data.text.char_text import CharTextDataModule
from glimpse.data.text.corpora import CorpusError
from glimpse.data.text.vocab import UNKNOWN, CharVocab

SHAKESPEARE = SHARED_DATA / "tinyshakespeare/input.txt"

TRAIN_CHARS, VAL_CHARS, TEST_CHARS = 3600, 200, 200  # 90/5/5 of 4000
ALPHABET = "abcdefghij klmnop\n,.é─🙂"
NOVEL = "Ω"  # appears only in val and test


def _make_text(seed: int = 0) -> str:
    rng = random.Random(seed)

    def chunk(n: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(n))

    train = chunk(TRAIN_CHARS)
    train = ALPHABET + train[len(ALPHABET) :]  # every alphabet char is seen in training
    val = chunk(VAL_CHARS - 3) + NOVEL * 3
    test = NOVEL + chunk(TEST_CHARS - 1)
    text = train + val + test
    assert len(text) == TRAIN_CHARS + VAL_CHARS + TEST_CHARS
    return text


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes(_make_text().encode("utf-8"))
    return path


def _module(path: Path, **kwargs) -> CharTextDataModule:
    kwargs.setdefault("seq_len", 16)
    kwargs.setdefault("batch_size", 4)
    dm = CharTextDataModule(corpus="text", path=str(path), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_splits_are_contiguous_90_5_5_spans_in_order(corpus_file: Path):
    text = corpus_file.read_bytes().decode("utf-8")
    dm = _module(corpus_file)
    lengths = {name: len(dm.tokens[name]) for name in ("train", "val", "test")}
    assert lengths == {"train": TRAIN_CHARS, "val": VAL_CHARS, "test": TEST_CHARS}
    assert dm.spec.metadata["split_chars"] == lengths
    decoded = {name: dm.vocab.decode(dm.tokens[name]) for name in ("train", "val", "test")}
    assert decoded["train"] == text[:TRAIN_CHARS]
    assert decoded["val"] == text[TRAIN_CHARS : TRAIN_CHARS + VAL_CHARS].replace(NOVEL, UNKNOWN)
    assert decoded["test"] == text[TRAIN_CHARS + VAL_CHARS :].replace(NOVEL, UNKNOWN)
    assert "".join(decoded.values()) == text.replace(NOVEL, UNKNOWN)


def test_characters_unseen_in_train_become_unknown(corpus_file: Path):
    dm = _module(corpus_file)
    assert NOVEL not in dm.vocab.symbols
    assert int((dm.tokens["train"] == 0).sum()) == 0
    assert int((dm.tokens["val"] == 0).sum()) == 3
    assert int((dm.tokens["test"] == 0).sum()) == 1
    assert dm.tokens["test"][0] == 0
    assert dm.vocab.decode(dm.tokens["val"][-3:]) == UNKNOWN * 3


def test_vocab_is_built_from_train_split_only(corpus_file: Path):
    text = corpus_file.read_bytes().decode("utf-8")
    dm = _module(corpus_file)
    assert dm.vocab.symbols == CharVocab.from_text(text[:TRAIN_CHARS]).symbols
    assert set(dm.vocab.symbols) == {UNKNOWN, *ALPHABET}


@pytest.mark.parametrize("batching", ["stream", "windows"])
def test_spec_describes_the_corpus(corpus_file: Path, batching: str):
    text = corpus_file.read_bytes().decode("utf-8")
    dm = _module(corpus_file, batching=batching, seq_len=12)
    spec = dm.spec
    assert spec.kind == TEXT == CharTextDataModule.KIND
    assert spec.vocab == dm.vocab.symbols
    assert spec.vocab[0] == UNKNOWN
    meta = spec.metadata
    assert meta["corpus"] == "text"
    assert meta["source"] == str(corpus_file)
    assert meta["num_chars"] == len(text) == 4000
    assert meta["sha256"] == hashlib.sha256(corpus_file.read_bytes()).hexdigest()
    assert meta["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert meta["batching"] == batching
    assert meta["seq_len"] == 12


def test_text_corpus_keeps_carriage_returns(tmp_path: Path):
    # The corpus is the file's characters: "\r\n" must not be rewritten to "\n", or the
    # recorded size and SHA-256 would not describe the file.
    text = "line one\r\nline two\rthree\n" * 200
    path = tmp_path / "crlf.txt"
    path.write_bytes(text.encode("utf-8"))
    dm = _module(path)
    assert "\r" in dm.vocab.symbols
    assert dm.spec.metadata["num_chars"] == len(text)
    assert dm.spec.metadata["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    decoded = "".join(dm.vocab.decode(dm.tokens[name]) for name in ("train", "val", "test"))
    assert decoded == text


def test_stream_train_loader_yields_continuing_batches(corpus_file: Path):
    b, t = 4, 16
    dm = _module(corpus_file, batch_size=b, seq_len=t, batching="stream")
    loader = dm.train_dataloader()
    batches = list(loader)
    stream_len = (TRAIN_CHARS - 1) // b
    assert len(batches) == len(loader) == stream_len // t
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (b, t)
        assert inputs.dtype == targets.dtype == torch.int64
    rows = torch.cat([inputs for inputs, _ in batches], dim=1)
    row_targets = torch.cat([targets for _, targets in batches], dim=1)
    train = dm.tokens["train"]
    for r in range(b):
        start = r * stream_len
        assert torch.equal(rows[r], train[start : start + rows.shape[1]])
        assert torch.equal(row_targets[r], train[start + 1 : start + 1 + rows.shape[1]])


def test_stream_val_and_test_loaders_yield_batches(corpus_file: Path):
    dm = _module(corpus_file, batch_size=2, seq_len=16, batching="stream")
    for loader, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        batches = list(loader)
        assert len(batches) == ((len(dm.tokens[split]) - 1) // 2) // 16
        inputs, targets = batches[0]
        assert inputs.shape == (2, 16)
        assert torch.equal(inputs[0], dm.tokens[split][:16])
        assert torch.equal(targets[0], dm.tokens[split][1:17])


def test_windows_train_loader_yields_shifted_batches(corpus_file: Path):
    b, t = 4, 16
    dm = _module(corpus_file, batch_size=b, seq_len=t, batching="windows", windows_per_epoch=40)
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 40 // b
    train = dm.tokens["train"]
    windows = train.unfold(0, t + 1, 1)  # every contiguous (T + 1)-window of the split
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (b, t)
        assert inputs.dtype == targets.dtype == torch.long
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        for row_in, row_tgt in zip(inputs, targets, strict=True):
            window = torch.cat([row_in, row_tgt[-1:]])
            assert (windows == window).all(dim=1).any()


def test_windows_val_loader_scores_consecutive_windows(corpus_file: Path):
    t = 16
    dm = _module(corpus_file, batch_size=4, seq_len=t, batching="windows")
    batches = list(dm.val_dataloader())
    inputs = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches])
    n = (VAL_CHARS - 1) // t
    assert inputs.shape == (n, t)
    val = dm.tokens["val"]
    assert torch.equal(inputs.flatten(), val[: n * t])
    assert torch.equal(targets.flatten(), val[1 : n * t + 1])


def test_missing_file_raises_corpus_error_naming_path(tmp_path: Path):
    missing = tmp_path / "nowhere" / "missing.txt"
    dm = CharTextDataModule(corpus="text", path=str(missing))
    with pytest.raises(CorpusError, match="missing.txt") as info:
        dm.prepare_data()
    assert str(missing) in str(info.value)
    with pytest.raises(CorpusError):
        dm.setup("fit")


def test_non_utf8_file_raises_corpus_error(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf" + "é" * 50 + " ordinary text\n" * 100).encode("latin-1"))
    dm = CharTextDataModule(corpus="text", path=str(path))
    with pytest.raises(CorpusError, match="UTF-8") as info:
        dm.prepare_data()
    assert str(path) in str(info.value)


def test_empty_file_raises_corpus_error(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    dm = CharTextDataModule(corpus="text", path=str(path))
    with pytest.raises(CorpusError, match="empty"):
        dm.prepare_data()


def test_corpus_error_is_a_value_error():
    assert issubclass(CorpusError, ValueError)


@pytest.mark.parametrize(
    ("batching", "batch_size", "seq_len"),
    [("stream", 64, 16), ("stream", 4, 60), ("windows", 4, 200)],
)
def test_seq_len_too_long_for_split_names_split(corpus_file, batching, batch_size, seq_len):
    dm = CharTextDataModule(
        corpus="text",
        path=str(corpus_file),
        batching=batching,
        batch_size=batch_size,
        seq_len=seq_len,
    )
    dm.prepare_data()
    with pytest.raises(ValueError, match="data.seq_len") as info:
        dm.setup("fit")
    assert "val split" in str(info.value)


def test_seq_len_fits_exactly(corpus_file: Path):
    # windows mode needs seq_len + 1 characters per split: 199 fits in the 200-char val split
    dm = _module(corpus_file, batching="windows", seq_len=VAL_CHARS - 1)
    assert len(dm.val_dataloader()) == 1


def test_text_corpus_without_path_raises():
    with pytest.raises(ValueError, match="data.path"):
        CharTextDataModule(corpus="text")
    with pytest.raises(ValueError, match="data.path"):
        CharTextDataModule(corpus="text", path="")


def test_unknown_corpus_raises():
    with pytest.raises(ValueError, match="data.corpus"):
        CharTextDataModule(corpus="wikipedia")


@pytest.mark.parametrize(
    "splits",
    [
        (0.9, 0.1),
        (0.9, 0.1, 0.0),
        (0.5, 0.3, 0.3),
        (1.2, -0.1, -0.1),
        (0.9, 0.05, 0.04),
        (0.5, 0.2, 0.2, 0.1),
    ],
)
def test_bad_splits_raise(corpus_file: Path, splits):
    with pytest.raises(ValueError, match="data.splits"):
        CharTextDataModule(corpus="text", path=str(corpus_file), splits=splits)


def test_other_splits_are_honoured(corpus_file: Path):
    dm = _module(corpus_file, splits=(0.5, 0.25, 0.25))
    assert [len(dm.tokens[s]) for s in ("train", "val", "test")] == [2000, 1000, 1000]


def test_unknown_batching_raises(corpus_file: Path):
    with pytest.raises(ValueError, match="data.batching"):
        CharTextDataModule(corpus="text", path=str(corpus_file), batching="bptt")


def test_spec_before_setup_raises(corpus_file: Path):
    dm = CharTextDataModule(corpus="text", path=str(corpus_file))
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.spec


def test_pystdlib_corpus_works_offline():
    dm = CharTextDataModule(corpus="pystdlib", seq_len=64, batch_size=8)
    assert dm.corpus_file is None
    dm.prepare_data()
    dm.setup("fit")
    meta = dm.spec.metadata
    assert meta["corpus"] == "pystdlib"
    assert meta["source"] == "python stdlib"
    assert meta["num_chars"] > 1_000_000
    assert sum(meta["split_chars"].values()) == meta["num_chars"]
    assert len(meta["sha256"]) == 64
    assert dm.spec.vocab[0] == UNKNOWN
    assert {"d", "e", "f", " ", "\n", ":"} <= set(dm.spec.vocab)
    inputs, targets = next(iter(dm.train_dataloader()))
    assert inputs.shape == targets.shape == (8, 64)


def test_tiny_shakespeare_slice_is_accepted_by_md5(tmp_path: Path):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} is not present")
    target = tmp_path / "tinyshakespeare" / "input.txt"
    target.parent.mkdir()
    shutil.copyfile(SHAKESPEARE, target)
    dm = CharTextDataModule(
        corpus="shakespeare",
        data_dir=str(tmp_path),
        url="http://127.0.0.1:9/unreachable/input.txt",  # any network access would fail
        seq_len=64,
        batch_size=8,
    )
    assert dm.corpus_file == target
    dm.prepare_data()  # accepted by md5: no download
    dm.setup("fit")
    assert len(dm.vocab) == 66
    assert len(dm.spec.vocab) == 66
    meta = dm.spec.metadata
    assert meta["num_chars"] == 1_115_394
    assert meta["corpus"] == "shakespeare"
    assert meta["source"] == str(target)
    assert meta["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_tiny_shakespeare_with_wrong_content_is_rejected(tmp_path: Path):
    target = tmp_path / "tinyshakespeare" / "input.txt"
    target.parent.mkdir()
    target.write_text("First Citizen:\nNot the real thing.\n")
    dm = CharTextDataModule(
        corpus="shakespeare", data_dir=str(tmp_path), url="http://127.0.0.1:9/input.txt"
    )
    with pytest.raises(DownloadError, match="md5"):
        dm.prepare_data()
    assert target.read_text() == "First Citizen:\nNot the real thing.\n"
