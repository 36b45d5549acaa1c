"""Caption file parsers, on generated files and on the real Flickr8k sample when present."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from glimpse.data.formats.caption_files import (
    captions_with_images,
    read_coco_captions,
    read_flickr8k_tokens,
    read_kaggle_captions,
    read_karpathy_split,
    read_split_list,
)

FLICKR8K = SHARED_DATA / "flickr8k"

TOKEN_LINES = [
    "1000_a.jpg#0\tA dog runs .",
    "1000_a.jpg#1\tA brown dog runs on grass .  ",
    "2000_b.jpg.1#0\tpeople waiting for the subway",
    "2000_b.jpg.1#1\tThree people at a station . ",
    "3000_c.jpg#0\tA man's hat , red .",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_flickr8k_tokens_handles_quirks(tmp_path, caplog):
    path = write(tmp_path / "Flickr8k.token.txt", TOKEN_LINES)
    with caplog.at_level(logging.INFO, logger="glimpse.data.formats.caption_files"):
        captions = read_flickr8k_tokens(path)
    assert list(captions) == ["1000_a.jpg", "2000_b.jpg", "3000_c.jpg"]
    assert captions["1000_a.jpg"] == ["A dog runs .", "A brown dog runs on grass ."]
    assert captions["2000_b.jpg"] == [
        "people waiting for the subway",
        "Three people at a station .",
    ]
    assert captions["3000_c.jpg"] == ["A man's hat , red ."]
    assert "mapped 2 lines" in caplog.text


@pytest.mark.parametrize(
    "bad", ["1000_a.jpg A dog runs without a tab", "1000_a.jpg\tno hash", "1000_a.jpg#0\t  "]
)
def test_read_flickr8k_tokens_malformed_line_names_file_and_line(tmp_path, bad):
    path = write(tmp_path / "tokens.txt", [*TOKEN_LINES[:2], bad, *TOKEN_LINES[2:]])
    with pytest.raises(ValueError, match=r"tokens\.txt:3:"):
        read_flickr8k_tokens(path)


def test_read_kaggle_captions_with_quoted_comma(tmp_path):
    path = write(
        tmp_path / "captions.txt",
        [
            "image,caption",
            "1000_a.jpg,A dog runs .",
            '1000_a.jpg,"A dog , brown , runs ."',
            "2000_b.jpg,A cat .",
        ],
    )
    assert read_kaggle_captions(path) == {
        "1000_a.jpg": ["A dog runs .", "A dog , brown , runs ."],
        "2000_b.jpg": ["A cat ."],
    }


def test_read_kaggle_captions_bad_header_and_row(tmp_path):
    with pytest.raises(ValueError, match="header"):
        read_kaggle_captions(write(tmp_path / "a.csv", ["name,text", "x.jpg,hi"]))
    with pytest.raises(ValueError, match=r"b\.csv:3:"):
        read_kaggle_captions(write(tmp_path / "b.csv", ["image,caption", "x.jpg,hi", "y.jpg"]))


def test_read_split_list(tmp_path):
    path = write(tmp_path / "train.txt", ["1000_a.jpg", "2000_b.jpg  ", "", "3000_c.jpg"])
    assert read_split_list(path) == ["1000_a.jpg", "2000_b.jpg", "3000_c.jpg"]


def test_read_coco_captions(tmp_path):
    data = {
        "images": [
            {"id": 42, "file_name": "000000000042.jpg"},
            {"id": 7, "file_name": "000000000007.jpg"},
            {"id": 9, "file_name": "000000000009.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "caption": "A cat on a mat. "},
            {"id": 2, "image_id": 42, "caption": "A dog."},
            {"id": 3, "image_id": 7, "caption": "A sleepy cat."},
        ],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    captions, ids = read_coco_captions(path)
    assert captions == {
        "000000000042.jpg": ["A dog."],
        "000000000007.jpg": ["A cat on a mat.", "A sleepy cat."],
        "000000000009.jpg": [],
    }
    assert ids == {"000000000042.jpg": 42, "000000000007.jpg": 7, "000000000009.jpg": 9}

    data["annotations"].append({"id": 4, "image_id": 99, "caption": "?"})
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown image id 99"):
        read_coco_captions(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="captions.json"):
        read_coco_captions(path)


def test_read_karpathy_split_maps_restval_to_train(tmp_path):
    images = [
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000000042.jpg",
            "cocoid": 42,
            "split": "restval",
            "sentences": [{"raw": "A dog. ", "tokens": ["a", "dog"]}, {"raw": "Dog."}],
        },
        {"filename": "1000_a.jpg", "split": "test", "sentences": [{"raw": "A cat ."}]},
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    first, second = read_karpathy_split(path)
    assert first == ("train", 42, "val2014", "COCO_val2014_000000000042.jpg", ["A dog.", "Dog."])
    assert second == ("test", None, "", "1000_a.jpg", ["A cat ."])

    images[1]["split"] = "dev"
    path.write_text(json.dumps({"images": images}))
    with pytest.raises(ValueError, match="image 1 is not a Karpathy record"):
        read_karpathy_split(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a Karpathy split file"):
        read_karpathy_split(path)


def test_captions_with_images_counts_missing(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "1000_a.jpg").write_bytes(b"x")
    captions = {"1000_a.jpg": ["a"], "2000_b.jpg": ["b"], "3000_c.jpg": ["c"]}
    with caplog.at_level(logging.WARNING, logger="glimpse.data.formats.caption_files"):
        kept, missing = captions_with_images(captions, tmp_path / "img")
    assert kept == {"1000_a.jpg": ["a"]}
    assert missing == 2
    assert "2 of 3" in caplog.text


real = pytest.mark.skipif(not FLICKR8K.is_dir(), reason="shared flickr8k sample not present")


@real
def test_real_flickr8k_token_file():
    captions = read_flickr8k_tokens(FLICKR8K / "Flickr8k.token.txt")
    assert len(captions) == 8092
    assert sum(map(len, captions.values())) == 40460
    assert all(len(c) == 5 for c in captions.values())
    assert "2258277193_586949ec62.jpg" in captions
    assert not any(name.endswith(".1") for name in captions)
    assert all(c == c.strip() for caps in captions.values() for c in caps)


@real
def test_real_kaggle_csv_matches_token_file():
    tokens = read_flickr8k_tokens(FLICKR8K / "Flickr8k.token.txt")
    kaggle = read_kaggle_captions(FLICKR8K / "captions.txt")
    # The Kaggle CSV leaves out the quirk-key image; every other image is identical.
    assert set(tokens) - set(kaggle) == {"2258277193_586949ec62.jpg"}
    assert set(kaggle) <= set(tokens)

    def norm(caps: list[str]) -> list[str]:
        return [" ".join(c.split()) for c in caps]

    assert all(norm(kaggle[name]) == norm(tokens[name]) for name in kaggle)


@real
def test_real_split_lists():
    splits = {
        name: read_split_list(FLICKR8K / f"Flickr_8k.{name}Images.txt")
        for name in ("train", "dev", "test")
    }
    assert {k: len(v) for k, v in splits.items()} == {"train": 6000, "dev": 1000, "test": 1000}
    all_names = [n for names in splits.values() for n in names]
    assert len(set(all_names)) == 8000
    assert set(all_names) <= set(read_flickr8k_tokens(FLICKR8K / "Flickr8k.token.txt"))


@real
def test_real_captions_with_images_keeps_exactly_present_images():
    captions = read_flickr8k_tokens(FLICKR8K / "Flickr8k.token.txt")
    kept, missing = captions_with_images(captions, FLICKR8K / "Images")
    present = {p.name for p in (FLICKR8K / "Images").iterdir()}
    assert set(kept) == present & set(captions)
    assert len(kept) == len(present) == 1000
    assert missing == 8092 - 1000
