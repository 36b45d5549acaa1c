"""The shapes datamodules: each writes its set once, names it by its parameters and reads it
with the real datamodule of its format."""

from __future__ import annotations

from glimpse.data.synthetic.datamodules import (
    ShapesCaptionsDataModule,
    ShapesDataModule,
    ShapesDetectionDataModule,
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
