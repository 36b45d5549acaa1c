"""Captioning datamodules: Flickr8k (official and Kaggle layouts, quirks, download), COCO
captions (official and Karpathy splits), shapes captions, batching; and the real samples in
../shared/data when present."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, md5
from PIL import Image

from glimpse.batches import CAPTIONED_IMAGES, CaptionedImages
from glimpse.data.captions import flickr8k as flickr8k_module
from glimpse.data.captions.coco_captions import CocoCaptionsDataModule
from glimpse.data.captions.datamodule import CaptionSample, collate_captions
from glimpse.data.captions.flickr8k import (
    IMAGES_ARCHIVE,
    PUBLISHED_MD5,
    TEXT_ARCHIVE,
    Flickr8kDataModule,
)
from glimpse.data.download import DownloadError
from glimpse.data.spec import DataSpec
from glimpse.data.text.word_tokenizer import WordTokenizer

SIZE = 16
SHARED = SHARED_DATA
FLICKR8K = SHARED / "flickr8k"
COCO_MINI = SHARED / "coco_mini"

#: A Flickr8k-format token file with the real files' quirks: the ``t1.jpg.1`` key, trailing
#: spaces, `` .`` tokens, and captions of ``gone.jpg``, listed in train but with no file.
TOKENS = [
    "t0.jpg#0\tA dog runs on the grass .",
    "t0.jpg#1\tA brown dog runs .  ",
    "t1.jpg.1#0\tTwo dogs play in the snow .",
    "t1.jpg.1#1\tDogs playing .",
    "t1.jpg.1#2\tA dog and a dog .",
    "t2.jpg#0\tA man rides a red bike .",
    "t2.jpg#1\tA man on a bike ",
    "t3.jpg#0\tA girl runs .",
    "gone.jpg#0\tA cat sleeps .",
    "gone.jpg#1\tA sleeping cat .",
    "v0.jpg#0\tA zebra runs .",
    "v0.jpg#1\tA dog runs .",
    "v1.jpg#0\tA man runs .",
    "s0.jpg#0\tA girl on a bike .",
    "s0.jpg#1\tThe girl rides .",
    "s0.jpg#2\tA bike .",
]
SPLITS = {
    "train": ["t0.jpg", "t1.jpg", "gone.jpg", "t2.jpg", "t3.jpg"],
    "dev": ["v0.jpg", "v1.jpg"],
    "test": ["s0.jpg"],
}
FILES = ["t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg", "v0.jpg", "v1.jpg", "s0.jpg", "extra.jpg"]


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_official(root: Path, image_dir: str = "Flicker8k_Dataset") -> Path:
    for i, name in enumerate(FILES):
        write_jpeg(root / image_dir / name, i)
    (root / "Flickr8k.token.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    for split, names in SPLITS.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    return root


def write_kaggle(root: Path, split_lists: bool) -> Path:
    for i, name in enumerate(FILES):
        write_jpeg(root / "Images" / name, i)
    rows = ["image,caption"]
    for line in TOKENS:
        key, caption = line.split("\t")
        name = key.split("#")[0].replace(".jpg.1", ".jpg")
        rows.append(f'{name},"{caption}"')
    (root / "captions.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if split_lists:
        for split, names in SPLITS.items():
            (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    return root


def flickr(root: Path, **kwargs) -> Flickr8kDataModule:
    defaults = dict(image_size=SIZE, batch_size=3, num_workers=0, min_word_freq=1, crop_ratio=1)
    return Flickr8kDataModule(root=root, **{**defaults, **kwargs})


@pytest.fixture
def official(tmp_path) -> Path:
    return write_official(tmp_path / "flickr8k")


def test_official_layout_counts_quirks_and_warns_about_missing_images(official, caplog):
    data = flickr(official)
    with caplog.at_level(logging.INFO):
        data.setup()
    meta = data.spec.metadata
    assert meta["layout"] == "official"
    assert meta["splits"] == {
        "train": {"images": 4, "captions": 8, "missing_images": 1, "uncaptioned_images": 0},
        "val": {"images": 2, "captions": 3, "missing_images": 0, "uncaptioned_images": 0},
        "test": {"images": 1, "captions": 3, "missing_images": 0, "uncaptioned_images": 0},
    }
    assert meta["images_missing"] == 1 and meta["min_word_freq"] == 1
    assert meta["max_caption_words"] == 6  # "a dog runs on the grass", "a man rides a red bike"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "train split: 1 of the 5 images listed in" in warnings[0].getMessage()
    assert "Flickr_8k.trainImages.txt" in warnings[0].getMessage()
    assert "(their 2 captions are left out)" in warnings[0].getMessage()
    assert "gone.jpg" in warnings[0].getMessage()
    assert "mapped 3 lines" in caplog.text  # the t1.jpg.1 key
    train = data.dataset("train")
    assert train.names == ("t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg")
    assert train.references[0] == ("a dog runs on the grass", "a brown dog runs")
    assert train.references[1] == ("two dogs play in the snow", "dogs playing", "a dog and a dog")
    assert train.references[2][1] == "a man on a bike"
    data.setup("test")  # indexing again warns no more
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_the_release_folder_or_images_folder_is_read(tmp_path):
    data = flickr(write_official(tmp_path / "f", image_dir="Images"), layout="official")
    data.setup("validate")
    assert data.spec.metadata["splits"]["val"]["images"] == 2


def test_vocabulary_comes_from_the_training_captions_only(official):
    data = flickr(official)
    data.setup("validate")
    vocab = data.spec.vocab
    assert "zebra" not in vocab  # a val-only word
    assert "cat" not in vocab  # only in the captions of gone.jpg, which has no file
    assert {"dog", "snow", "bike", "girl"} <= set(vocab)
    assert data.tokenizer.encode("a zebra")[2] == data.tokenizer.unk_id
    frequent = flickr(official, min_word_freq=3)
    frequent.setup("validate")
    # In the training captions "a" is seen 9 times, "dog" 4, "runs" 3, the others at most 2.
    assert frequent.spec.vocab[4:] == ("a", "dog", "runs")


def test_train_samples_are_caption_pairs_and_eval_samples_carry_every_reference(official):
    data = flickr(official)
    data.setup()
    train, val = data.dataset("train"), data.dataset("val")
    assert len(train) == 8 and len(val) == 2
    images = [train[k].name for k in range(len(train))]
    assert images == ["t0.jpg"] * 2 + ["t1.jpg"] * 3 + ["t2.jpg"] * 2 + ["t3.jpg"]
    sample = train[3]
    assert len(sample.captions) == 1 and sample.image.shape == (3, SIZE, SIZE)
    assert data.tokenizer.decode(sample.captions[0]) == "dogs playing"
    assert sample.references == train.references[1]
    first = val[0]
    assert [data.tokenizer.decode(c) for c in first.captions] == ["a <unk> runs", "a dog runs"]
    assert first.references == ("a zebra runs", "a dog runs")  # raw words, no <unk>


def test_collate_pads_captions_and_carries_lengths_and_images():
    samples = [
        CaptionSample(torch.zeros(3, 4, 4), (torch.tensor([1, 5, 6, 2]),), ("x y",), "a.jpg"),
        CaptionSample(
            torch.ones(3, 4, 4),
            (torch.tensor([1, 7, 2]), torch.tensor([1, 8, 9, 10, 11, 2])),
            ("p", "q r s t"),
            "b.jpg",
        ),
    ]
    batch = collate_captions(samples)
    assert isinstance(batch, CaptionedImages)
    assert batch.images.shape == (2, 3, 4, 4) and batch.images.dtype == torch.float32
    assert batch.captions.tolist() == [
        [1, 5, 6, 2, 0, 0],
        [1, 7, 2, 0, 0, 0],
        [1, 8, 9, 10, 11, 2],
    ]
    assert batch.captions.dtype == torch.int64
    assert batch.lengths.tolist() == [4, 3, 6] and batch.lengths.dtype == torch.int64
    assert batch.caption_image.tolist() == [0, 1, 1]
    assert batch.references == (("x y",), ("p", "q r s t")) and batch.names == ("a.jpg", "b.jpg")
    half = collate_captions([samples[0]._replace(image=torch.zeros(5, 8, dtype=torch.float16))])
    assert half.images.shape == (1, 5, 8) and half.images.dtype == torch.float32


def test_loaders_batch_pairs_in_training_and_all_references_in_evaluation(official):
    data = flickr(official, eval_batch_size=2)
    data.setup()
    train = list(data.train_dataloader())
    assert len(train) == 2  # 8 pairs in batches of 3, the last partial one dropped
    batch = train[0]
    assert batch.images.shape == (3, 3, SIZE, SIZE)
    assert batch.caption_image.tolist() == [0, 1, 2] and len(batch.names) == 3
    assert torch.equal(batch.captions[:, 0], torch.ones(3, dtype=torch.long))
    for row, length in zip(batch.captions, batch.lengths, strict=True):
        assert row[length - 1] == 2 and (row[length:] == 0).all()
    assert batch.captions.shape[1] == batch.lengths.max()  # padded to the longest, no more
    (val,) = list(data.val_dataloader())
    assert val.names == ("v0.jpg", "v1.jpg")
    assert val.caption_image.tolist() == [0, 0, 1] and val.lengths.tolist() == [5, 5, 5]
    assert val.references == (("a zebra runs", "a dog runs"), ("a man runs",))


def test_spec_round_trips_and_rebuilds_the_tokenizer(official, tmp_path):
    data = flickr(official)
    data.setup("fit")
    spec = data.spec
    assert spec.kind == CAPTIONED_IMAGES == data.KIND
    assert spec.image_size == SIZE and spec.mean == (0.485, 0.456, 0.406)
    torch.save(spec.to_dict(), tmp_path / "spec.pt")
    loaded = DataSpec.from_dict(torch.load(tmp_path / "spec.pt", weights_only=True))
    assert loaded == spec
    assert WordTokenizer(loaded.vocab) == data.tokenizer
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


def test_kaggle_layout_reads_split_lists_when_present(tmp_path):
    data = flickr(write_kaggle(tmp_path / "k", split_lists=True))
    data.setup()
    assert data.spec.metadata["layout"] == "kaggle"
    assert data.spec.metadata["splits"]["train"]["images"] == 4
    assert data.spec.metadata["splits"]["train"]["missing_images"] == 1
    assert data.dataset("train").references[1][0] == "two dogs play in the snow"


def test_kaggle_layout_without_split_lists_is_split_by_seed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(flickr8k_module, "SEEDED_SPLIT", {"train": 4, "val": 2})
    root = write_kaggle(tmp_path / "k", split_lists=False)
    with caplog.at_level(logging.INFO, logger="glimpse.data.captions.flickr8k"):
        data = flickr(root, split_seed=3)
        data.setup()
    assert "split the 8 captioned images with seed 3 into 4 train, 2 val, 2 test" in caplog.text
    names = {s: set(data.split(s).names) for s in ("train", "val", "test")}
    assert sum(map(len, names.values())) + data.spec.metadata["images_missing"] == 8
    assert not (names["train"] & names["val"]) and not (names["val"] & names["test"])
    again = flickr(root, split_seed=3)
    again.setup()
    assert {s: set(again.split(s).names) for s in names} == names
    other = flickr(root, split_seed=4)
    other.setup()
    assert {s: set(other.split(s).names) for s in names} != names


def test_an_empty_split_names_its_list_and_folder(official):
    (official / "Flickr_8k.testImages.txt").write_text("nowhere.jpg\n")
    with pytest.raises(ValueError, match=r"test split is empty: .*testImages\.txt .*Flicker8k"):
        flickr(official).setup()


def test_an_image_in_two_splits_is_refused(official):
    (official / "Flickr_8k.testImages.txt").write_text("s0.jpg\nt2.jpg\n")
    with pytest.raises(ValueError, match="t2.jpg is listed in both the train and the test"):
        flickr(official).setup()


def test_a_root_without_flickr8k_files_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        flickr(tmp_path / "empty").setup()
    with pytest.raises(FileNotFoundError, match="captions.txt and Images/"):
        flickr(tmp_path / "empty", layout="kaggle").setup()


def test_options_that_cannot_work_together_are_refused(official):
    with pytest.raises(ValueError, match="data.hflip=0"):
        flickr(official, cache_features=True, hflip=0.5)
    with pytest.raises(ValueError, match="skip_corrupt=true needs data.verify"):
        flickr(official, verify=False, skip_corrupt=True)
    with pytest.raises(ValueError, match="data.layout"):
        flickr(official, layout="zip")


def test_a_corrupt_image_is_reported_or_skipped(official, caplog):
    (official / "Flicker8k_Dataset" / "t3.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"t3\.jpg cannot be decoded"):
        flickr(official).setup("fit")
    data = flickr(official, skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        data.setup("fit")
    assert data.dataset("train").names == ("t0.jpg", "t1.jpg", "t2.jpg")
    assert "Skipped 1 unreadable image(s) of the 4 in the train split" in caplog.text


def test_display_image_is_the_unnormalised_crop(official):
    data = flickr(official, image_size=12, crop_ratio=0.75)
    data.setup("validate")
    image = data.display_image("val", "v1.jpg")
    assert image.shape == (3, 12, 12) and image.min() >= 0 and image.max() <= 1
    normalised = data.dataset("val")[1].image
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    assert torch.allclose((image - mean) / std, normalised, atol=1e-5)
    with pytest.raises(KeyError, match="t0.jpg is not an image of the val split"):
        data.display_image("val", "t0.jpg")


# --- COCO captions ------------------------------------------------------------------------


def write_coco(root: Path) -> Path:
    """train2017 (ids 1-4, id 4 with no file), val2017 (ids 5-6, 6 without captions) and
    Karpathy's file over the same ids (id 5 train via restval, 1 val, 2 and 3 test)."""
    layout = {"train": [1, 2, 3, 4], "val": [5, 6]}
    captions = {
        1: ["A dog runs.", "A dog on grass. "],
        2: ["A cat sleeps."],
        3: ["Two birds fly.", "Birds.", "Two birds in the sky."],
        4: ["A lost image."],
        5: ["A man rides a bike."],
        6: [],
    }
    for split, ids in layout.items():
        document = {
            "images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids],
            "annotations": [
                {"id": 10 * i + k, "image_id": i, "caption": c}
                for i in ids
                for k, c in enumerate(captions[i])
            ],
        }
        path = root / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
        for i in ids:
            if i != 4:
                write_jpeg(root / f"{split}2017" / f"{i:012d}.jpg", i)
    karpathy = {"train": [4], "restval": [5], "val": [1], "test": [2, 3]}
    images = [
        {
            "filepath": "val2014",
            "filename": f"COCO_val2014_{i:012d}.jpg",
            "cocoid": i,
            "split": split,
            "sentences": [{"raw": c, "tokens": []} for c in captions[i]],
        }
        for split, ids in karpathy.items()
        for i in ids
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    return root


def coco(root: Path, **kwargs) -> CocoCaptionsDataModule:
    defaults = dict(image_size=SIZE, batch_size=2, num_workers=0, min_word_freq=1, crop_ratio=1)
    return CocoCaptionsDataModule(root=root, **{**defaults, **kwargs})


def test_coco_official_split_tests_on_val(tmp_path, caplog):
    data = coco(write_coco(tmp_path / "coco"))
    data.prepare_data()
    with caplog.at_level(logging.WARNING):
        data.setup()
    splits = data.spec.metadata["splits"]
    assert splits["train"] == {
        "images": 3,
        "captions": 6,
        "missing_images": 1,
        "uncaptioned_images": 0,
    }
    assert splits["val"] == splits["test"]
    assert splits["val"]["uncaptioned_images"] == 1 and splits["val"]["images"] == 1
    assert data.dataset("test") is data.dataset("val")
    assert "train split: 1 of the 4 images listed in" in caplog.text
    assert "captions_train2017.json" in caplog.text
    assert data.dataset("train").references[0] == ("a dog runs", "a dog on grass")
    (batch,) = list(data.test_dataloader())
    assert batch.names == ("000000000005.jpg",)


def test_coco_karpathy_split_finds_2017_files_by_cocoid(tmp_path):
    data = coco(write_coco(tmp_path / "coco"), split="karpathy")
    data.setup()
    assert data.dataset("train").names == ("000000000005.jpg",)  # restval joins train
    assert data.dataset("val").names == ("000000000001.jpg",)
    assert data.dataset("test").names == ("000000000002.jpg", "000000000003.jpg")
    assert data.dataset("val").paths[0].parent.name == "train2017"
    assert data.spec.metadata["splits"]["train"]["missing_images"] == 1  # id 4 has no file
    assert data.spec.vocab[4:] == ("a", "bike", "man", "rides")
    assert data.spec.metadata["layout"] == "coco2017-karpathy"


def test_coco_without_its_files_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        coco(tmp_path / "nothing").prepare_data()
    root = write_coco(tmp_path / "coco")
    with pytest.raises(FileNotFoundError, match="karpathy_file"):
        coco(root, split="karpathy", karpathy_file=tmp_path / "none.json").setup()
    (root / "annotations" / "captions_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="captions_val2017.json does not exist"):
        coco(root).setup()


# --- Download -----------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def release(tmp_path) -> dict[str, bytes]:
    """The two official archives of the test corpus, laid out like the real ones (image
    folder and top-level text files, each with a ``__MACOSX`` folder)."""
    source = write_official(tmp_path / "source")
    images = {
        f"Flicker8k_Dataset/{p.name}": p.read_bytes()
        for p in sorted((source / "Flicker8k_Dataset").iterdir())
    }
    images["__MACOSX/Flicker8k_Dataset/._t0.jpg"] = b"resource fork"
    texts = {p.name: p.read_bytes() for p in sorted(source.glob("*.txt"))}
    texts["__MACOSX/._Flickr8k.token.txt"] = b"resource fork"
    return {IMAGES_ARCHIVE: zip_bytes(images), TEXT_ARCHIVE: zip_bytes(texts)}


def serve(server, release: dict[str, bytes]) -> str:
    for name, body in release.items():
        server.routes[f"/mirror/{name}"] = (200, body, None)
    return server.url("/mirror")


def test_download_extracts_the_release_once(server, release, tmp_path):
    root = tmp_path / "data" / "flickr8k"
    base = serve(server, release)
    checksums = {name: md5(body) for name, body in release.items()}
    data = flickr(root, download=True, base_url=base, md5=checksums)
    data.prepare_data()
    assert sorted(p.name for p in root.iterdir()) == [
        "Flicker8k_Dataset",
        "Flickr8k.token.txt",
        "Flickr_8k.devImages.txt",
        "Flickr_8k.testImages.txt",
        "Flickr_8k.trainImages.txt",
    ]  # no __MACOSX, no archive, no temporary folder
    assert len(list((root / "Flicker8k_Dataset").iterdir())) == len(FILES)
    data.setup()
    assert data.spec.metadata["splits"]["train"]["images"] == 4
    flickr(root, download=True, base_url=base, md5=checksums).prepare_data()
    assert sorted(server.requests) == [f"/mirror/{IMAGES_ARCHIVE}", f"/mirror/{TEXT_ARCHIVE}"]


def test_download_fetches_only_what_root_lacks(server, release, tmp_path):
    root = write_official(tmp_path / "flickr8k")
    (root / "Flickr8k.token.txt").unlink()
    base = serve(server, release)
    checksum = {TEXT_ARCHIVE: md5(release[TEXT_ARCHIVE])}
    flickr(root, download=True, base_url=base, md5=checksum).prepare_data()
    assert server.requests == [f"/mirror/{TEXT_ARCHIVE}"]
    assert (root / "Flickr8k.token.txt").is_file()


def test_a_download_with_the_wrong_md5_is_refused_and_leaves_nothing(server, release, tmp_path):
    root = tmp_path / "flickr8k"
    data = flickr(root, download=True, base_url=serve(server, release))
    with pytest.raises(DownloadError, match=f"expected {PUBLISHED_MD5[IMAGES_ARCHIVE]}"):
        data.prepare_data()
    assert list(root.iterdir()) == []


# --- The real samples ---------------------------------------------------------------------

#: The 1,000 images of ../shared/data/flickr8k in the release's split lists (9 are in none).
REAL_COUNTS = {
    "train": {"images": 753, "captions": 3765, "missing_images": 5247, "uncaptioned_images": 0},
    "val": {"images": 113, "captions": 565, "missing_images": 887, "uncaptioned_images": 0},
    "test": {"images": 125, "captions": 625, "missing_images": 875, "uncaptioned_images": 0},
}
real_flickr = pytest.mark.skipif(not FLICKR8K.is_dir(), reason="shared flickr8k sample absent")


@real_flickr
@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_real_flickr8k_sample(layout, caplog):
    data = flickr(FLICKR8K, layout=layout, min_word_freq=5, verify=False)
    with caplog.at_level(logging.WARNING):
        data.setup()
    assert data.spec.metadata["splits"] == REAL_COUNTS
    assert data.spec.metadata["images_missing"] == 5247 + 887 + 875
    assert data.spec.metadata["layout"] == layout
    assert "train split: 5247 of the 6000 images listed in" in caplog.text
    assert "test split: 875 of the 1000 images listed in" in caplog.text
    assert len(data.spec.vocab) == 750
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (3, 3, SIZE, SIZE) and batch.captions.shape[0] == 15


@real_flickr
def test_real_kaggle_copy_without_split_lists_is_split_by_seed(tmp_path):
    (tmp_path / "Images").symlink_to(FLICKR8K / "Images")
    (tmp_path / "captions.txt").symlink_to(FLICKR8K / "captions.txt")
    data = flickr(tmp_path, verify=False)
    data.setup()
    splits = data.spec.metadata["splits"]
    assert [splits[s]["images"] + splits[s]["missing_images"] for s in splits] == [6000, 1000, 1091]
    assert sum(splits[s]["images"] for s in splits) == 1000


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="shared coco_mini sample absent")
def test_real_coco_mini():
    data = coco(COCO_MINI, min_word_freq=5)
    data.setup()
    splits = data.spec.metadata["splits"]
    assert (splits["train"]["images"], splits["train"]["captions"]) == (80, 400)
    assert (splits["val"]["images"], splits["val"]["captions"]) == (79, 395)
    assert data.spec.metadata["images_missing"] == 0
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (2, 3, SIZE, SIZE)
    assert all(len(refs) >= 5 for refs in batch.references)


def test_coco_captions_download_what_root_lacks_from_coco_addresses(server, tmp_path):
    release = write_coco(tmp_path / "release")
    (release / "annotations" / "instances_train2017.json").write_text("{}")
    (release / "annotations" / "instances_val2017.json").write_text("{}")

    def packed(top: str) -> bytes:
        files = sorted(p for p in (release / top).rglob("*") if p.is_file())
        return zip_bytes({p.relative_to(release).as_posix(): p.read_bytes() for p in files})

    bodies = {
        "train2017.zip": ("zips/train2017.zip", packed("train2017")),
        "annotations_trainval2017.zip": (
            "annotations/annotations_trainval2017.zip",
            packed("annotations"),
        ),
    }
    for address, body in bodies.values():
        server.routes[f"/coco/{address}"] = (200, body, None)
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    for path in (release / "val2017").iterdir():
        (root / "val2017" / path.name).write_bytes(path.read_bytes())
    sums = {name: md5(body) for name, (_, body) in bodies.items()}
    data = coco(root, download=True, base_url=server.url("/coco/"), md5=sums)
    data.prepare_data()
    assert sorted(server.requests) == [
        "/coco/annotations/annotations_trainval2017.zip",
        "/coco/zips/train2017.zip",
    ]
    data.setup()
    assert data.spec.metadata["splits"]["train"]["images"] == 3
    assert not list(root.glob("*.zip"))
