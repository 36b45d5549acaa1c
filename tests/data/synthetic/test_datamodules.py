"""The shapes datamodules: each writes its set once, names it by its parameters and reads it
with the real datamodule of its format."""

from __future__ import annotations

import torch

from glimpse.batches import ImageTextPairs, LabelledImages
from glimpse.data.images.decode import open_rgb
from glimpse.data.synthetic.datamodules import (
    ShapesCaptionsDataModule,
    ShapesDataModule,
    ShapesDetectionDataModule,
    ShapesPairsDataModule,
)
from glimpse.data.synthetic.shapes import KINDS


def test_shapes_datamodule_writes_once_then_reads_the_imagefolder(tmp_path):
    data = ShapesDataModule(
        data_dir=tmp_path, image_size=32, num_per_class=10, seed=3, batch_size=4, num_workers=0
    )
    data.prepare_data()
    assert data.root == tmp_path / "shapes_32_3_n10_d2"
    stamp = (data.root / "train").stat().st_mtime_ns
    data.prepare_data()
    assert (data.root / "train").stat().st_mtime_ns == stamp
    data.setup(None)
    counts = {split: len(data.dataset(split)) for split in ("train", "val", "test")}
    assert counts == {"train": 56, "val": 7, "test": 7}
    assert data.spec.class_names == tuple(sorted(KINDS))
    assert data.spec.metadata["seed"] == 3 and data.spec.metadata["num_per_class"] == 10
    other = ShapesDataModule(data_dir=tmp_path, image_size=32, num_per_class=5, seed=3)
    assert other.root != data.root


def test_shapes_captions_end_to_end(tmp_path):
    kwargs = dict(data_dir=tmp_path, num_images=16, image_size=16, batch_size=4, num_workers=0)
    data = ShapesCaptionsDataModule(**kwargs)
    data.prepare_data()
    assert data.root == tmp_path / "shapes_captions_16_0_n16_s3"
    written = (data.root / "Flickr8k.token.txt").stat().st_mtime_ns
    data.setup()
    meta = data.spec.metadata
    assert [meta["splits"][s]["images"] for s in ("train", "val", "test")] == [12, 2, 2]
    assert meta["splits"]["train"]["captions"] == 60 and meta["images_missing"] == 0
    assert (
        meta["generator"] == "glimpse.data.synthetic.shapes.write_flickr8k"
        and meta["num_images"] == 16
    )
    batch = next(iter(data.train_dataloader()))
    assert batch.images.shape == (4, 3, 16, 16) and batch.captions.shape[0] == 4
    words = data.tokenizer.decode(batch.captions[0]).split()
    assert words and "<unk>" not in words
    val = next(iter(data.val_dataloader()))
    assert val.captions.shape[0] == 10 and len(val.references[0]) == 5
    ShapesCaptionsDataModule(**kwargs).prepare_data()
    assert (data.root / "Flickr8k.token.txt").stat().st_mtime_ns == written


def test_shapes_detection_writes_coco_files_once_and_serves_batches(tmp_path):
    data = ShapesDetectionDataModule(
        data_dir=tmp_path, num_images=20, image_size=32, batch_size=4, num_workers=0
    )
    data.prepare_data()
    assert data.root == tmp_path / "shapes_coco_32_0_n20_s4"
    written = (data.root / "annotations/instances_train.json").stat().st_mtime_ns
    data.prepare_data()
    assert (data.root / "annotations/instances_train.json").stat().st_mtime_ns == written
    data.setup("fit")
    spec = data.spec
    assert spec.class_names == KINDS and spec.metadata["category_ids"] == [1, 2, 3, 4, 5, 6, 7]
    assert spec.metadata["generator"] == "glimpse.data.synthetic.shapes.write_coco"
    assert spec.metadata["counts"]["train"]["images"] == 16
    batch = next(iter(data.train_dataloader()))
    assert batch.images.shape == (4, 3, 32, 32) and not batch.mask.any()
    for target in batch.targets:
        assert len(target.boxes) >= 1 and target.labels.max() < len(KINDS)
        assert (target.boxes > 0).all() and (target.boxes <= 1).all()
    data.setup("test")
    assert len(data.dataset("test")) == 2 and data.dataset("test") is not data.dataset("val")
    assert spec.metadata["annotation_files"]["test"].endswith("instances_test.json")


def shapes_pairs(data_dir, **kwargs) -> ShapesPairsDataModule:
    defaults = {"image_size": 32, "batch_size": 4, "num_workers": 0, "vocab_size": 300}
    return ShapesPairsDataModule(data_dir=data_dir, **{**defaults, **kwargs})


def test_shapes_pairs_write_its_set_once_and_adds_zero_shot_shapes(tmp_path):
    zeroshot = ShapesDataModule(
        data_dir=tmp_path, image_size=24, num_per_class=10, num_workers=0, batch_size=99
    )
    data = shapes_pairs(tmp_path, source={"num_images": 20}, image_size=24, zeroshot=zeroshot)
    data.prepare_data()
    assert (tmp_path / "shapes_pairs_24_0_n20_s2" / "pairs.csv").is_file()
    data.setup("fit")
    assert data.spec.metadata["zeroshot_classes"] == sorted(KINDS)
    pairs, labelled = data.val_dataloader()
    assert isinstance(next(iter(pairs)), ImageTextPairs)
    batch = next(iter(labelled))
    assert isinstance(batch, LabelledImages) and batch.images.shape == (4, 3, 24, 24)
    path, label = zeroshot.dataset("val").samples[0]
    assert torch.allclose(batch.images[0], data.transforms["eval"](open_rgb(path)))
    assert int(batch.labels[0]) == label
    assert zeroshot.dataset("val").transform is not data.transforms["eval"]  # left as it was
    data.setup("test")
    assert len(data.test_dataloader()) == 2


def test_shapes_kinds_captions_are_written_to_a_folder_of_their_own(tmp_path):
    data = shapes_pairs(tmp_path, source={"num_images": 6, "captions": "kinds"})
    data.prepare_data()
    rows = (tmp_path / "shapes_pairs_32_0_n6_s2_kinds" / "pairs.csv").read_text().splitlines()
    assert all(caption.startswith(("a ", "an ")) for caption in (r.split(",")[1] for r in rows[1:]))
    data.setup("fit")
    assert data.spec.metadata["captions"] == "kinds"
