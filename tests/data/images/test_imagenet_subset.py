"""ImageNetSubsetDataModule on a generated ImageNet-style tree: chosen wnids only, labels in
sorted wnid order, names from a synset mapping, clear errors for missing wnids."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_train, tiny_image_overrides
from PIL import Image

from glimpse.data.images.imagenet_subset import (
    IMAGENET100,
    ImageNetSubsetDataModule,
    read_synset_mapping,
)
from glimpse.run import train

SIZE = 32
#: Five wnids with their LOC_synset_mapping.txt lines.
SYNSETS = {
    "n01440764": "tench, Tinca tinca",
    "n01443537": "goldfish, Carassius auratus",
    "n01484850": "great white shark, white shark, man-eater, man-eating shark",
    "n01491361": "tiger shark, Galeocerdo cuvieri",
    "n01494475": "hammerhead, hammerhead shark",
}
CHOSEN = ["n01494475", "n01440764", "n01484850"]  # not in sorted order on purpose
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """An ImageNet-style root: train/<wnid>/ and val/<wnid>/ of tiny JPEGs for 5 wnids (one
    image grayscale), a flat test/ of unlabelled images, and LOC_synset_mapping.txt."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for wnid in SYNSETS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    gray = rng.integers(0, 256, (44, 40), dtype=np.uint8)
    Image.fromarray(gray).save(root / "train" / CHOSEN[0] / "gray.JPEG")
    (root / "test").mkdir()
    Image.fromarray(gray).save(root / "test" / "ILSVRC2012_test_00000001.JPEG")
    mapping = "".join(f"{wnid} {names}\n" for wnid, names in SYNSETS.items())
    (root / "LOC_synset_mapping.txt").write_text(mapping)
    return root


def _datamodule(root: Path, **kwargs) -> ImageNetSubsetDataModule:
    return ImageNetSubsetDataModule(
        root, image_size=SIZE, batch_size=4, num_workers=0, crop_ratio=1.0, **kwargs
    )


def test_only_the_chosen_wnids_are_read_with_sorted_labels_and_names(imagenet):
    data = _datamodule(imagenet, classes=CHOSEN)
    data.prepare_data()
    data.setup(None)
    assert data.spec.metadata["class_folders"] == sorted(CHOSEN)
    assert data.spec.class_names == ("tench", "great white shark", "hammerhead")
    assert data.spec.metadata["classes_from"] == "list"
    train_set, val_set = data.dataset("train"), data.dataset("val")
    assert len(train_set) == 3 * TRAIN_PER_CLASS + 1 and len(val_set) == 3 * VAL_PER_CLASS
    for path, label in train_set.samples + val_set.samples:
        assert Path(path).parent.name == sorted(CHOSEN)[label]
    assert data.dataset("test") is val_set  # ImageNet's test labels are not public
    batch = next(iter(data.train_dataloader()))
    assert batch.images.shape == (4, 3, SIZE, SIZE)
    assert set(batch.labels.tolist()) <= {0, 1, 2}


def test_a_missing_wnid_fails_naming_it_and_the_root(imagenet):
    data = _datamodule(imagenet, classes=["n01440764", "n09999999"])
    with pytest.raises(ValueError) as error:
        data.setup("fit")
    message = str(error.value)
    assert message.startswith("n09999999 of data.classes (list) is not a class folder of")
    assert str(imagenet / "train") in message


def test_classes_from_a_file_and_names_from_a_given_mapping(imagenet, tmp_path):
    listing = tmp_path / "subset.txt"
    listing.write_text("# three fish\nn01491361\n\nn01443537  # goldfish\nn01440764\n")
    mapping = tmp_path / "names.txt"
    mapping.write_text("n01440764 tench\nn01443537 goldfish\nn01491361 tiger shark, shark\n")
    data = _datamodule(imagenet, classes=str(listing), synset_mapping=str(mapping))
    data.setup("validate")
    assert data.spec.metadata["class_folders"] == ["n01440764", "n01443537", "n01491361"]
    assert data.spec.class_names == ("tench", "goldfish", "tiger shark")
    assert data.spec.metadata["classes_from"] == str(listing)
    assert len(data.dataset("val")) == 3 * VAL_PER_CLASS


def test_without_a_mapping_the_wnids_are_the_names(imagenet, tmp_path):
    bare = tmp_path / "bare"
    for split in ("train", "val"):
        (bare / split).mkdir(parents=True)
        for wnid in CHOSEN[:2]:
            (bare / split / wnid).symlink_to(imagenet / split / wnid, target_is_directory=True)
    data = _datamodule(bare, classes=CHOSEN[:2])
    data.setup("fit")
    assert data.spec.class_names == tuple(sorted(CHOSEN[:2]))


def test_bad_class_lists_and_mappings_fail_with_one_sentence(imagenet, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped class list"):
        _datamodule(imagenet, classes="imagenet1k")
    with pytest.raises(ValueError, match="names n01440764 more than once"):
        _datamodule(imagenet, classes=["n01440764", "n01440764", "n01443537"])
    with pytest.raises(ValueError, match="holds 1 wnid"):
        _datamodule(imagenet, classes=["n01440764"])
    partial = tmp_path / "partial.txt"
    partial.write_text("n01440764 tench\n")
    with pytest.raises(ValueError, match="has no line for n01443537"):
        _datamodule(imagenet, classes=CHOSEN[1:2] + ["n01443537"], synset_mapping=partial).setup()
    malformed = tmp_path / "malformed.txt"
    malformed.write_text("n01440764 tench\nn01443537\n")
    with pytest.raises(ValueError, match="line 2"):
        read_synset_mapping(malformed)


def test_an_unsorted_val_folder_is_named(imagenet, tmp_path):
    root = tmp_path / "raw"
    (root / "train").mkdir(parents=True)
    for wnid in CHOSEN:
        (root / "train" / wnid).symlink_to(imagenet / "train" / wnid, target_is_directory=True)
    (root / "val").mkdir()
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match="sort ImageNet's validation images"):
        _datamodule(root, classes=CHOSEN).setup("fit")


def test_the_shipped_imagenet100_list_is_cmc_s():
    assert len(IMAGENET100) == len(set(IMAGENET100)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in IMAGENET100)
    assert IMAGENET100[:3] == ("n02869837", "n01749939", "n02488291")
    assert IMAGENET100[-1] == "n02090622"
    data = ImageNetSubsetDataModule("/nowhere")  # the default
    assert data.classes == sorted(IMAGENET100) and data.class_source == "imagenet100"


def test_fast_dev_run_of_vit_on_an_imagenet_subset(imagenet, tmp_path):
    overrides = [
        *tiny_image_overrides(tmp_path, data="imagenet_subset"),
        f"data.root={imagenet}",
        f"data.classes=[{','.join(CHOSEN)}]",
        "debug=fdr",
    ]
    value = train(compose_train(overrides, tmp_path / "run"))
    assert math.isfinite(value) and 0.0 <= value <= 1.0
