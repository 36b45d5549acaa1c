"""CocoDetectionDataModule on a generated COCO file with crowd, empty and degenerate cases;
subsets and their annotation files; EXIF orientation; downloads from a local server; the
shapes detection datamodule and the configs; and the real ../shared/data/coco_mini and
coco_tiny when they exist."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, compose_train, md5
from hydra.utils import instantiate
from PIL import Image
from pycocotools.coco import COCO

from glimpse.batches import DETECTION, DetectionBatch
from glimpse.data.coco2017 import ARCHIVES, PUBLISHED_MD5
from glimpse.data.detection.coco import CocoDetectionDataModule, open_annotated
from glimpse.data.download import DownloadError
from glimpse.data.images.decode import CorruptImageError
from glimpse.data.spec import DataSpec
from glimpse.data.synthetic.datamodules import ShapesDetectionDataModule

WIDTH, HEIGHT = 64, 48
MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
# Listed out of id order: classes follow the ids (cat 3 -> 0, dog 7 -> 1).
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
CAT_BOX = [8, 12, 16, 24]  # xywh


def _annotation(image_id: int, category: int, bbox: list[float], crowd: int = 0) -> dict:
    return {"image_id": image_id, "category_id": category, "bbox": bbox, "iscrowd": crowd}


#: image id -> its annotations. Image 20 has none; image 30 has a zero-width, a zero-height and
#: an outside-the-image box (3 degenerate) and one valid box; 10 has a crowd one.
TRAIN = {
    10: [
        _annotation(10, 3, CAT_BOX),
        _annotation(10, 7, [30, 10, 20, 20]),
        _annotation(10, 7, [0, 0, 10, 10], 1),
    ],
    20: [],
    30: [
        _annotation(30, 3, [5, 5, 0, 10]),
        _annotation(30, 7, [5, 5, 10, 0]),
        _annotation(30, 3, [70, 5, 10, 10]),
        _annotation(30, 7, [10, 10, 20, 20]),
    ],
    40: [_annotation(40, 7, [0, 0, WIDTH, HEIGHT])],
}
VAL = {
    100: [_annotation(100, 3, CAT_BOX), _annotation(100, 3, [40, 20, 10, 10], 1)],
    200: [_annotation(200, 7, [1, 1, 10, 10])],
}


def _write_split(root: Path, split: str, images: dict[int, list[dict]], seed: int) -> None:
    folder = root / f"{split}2017"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records, annotations = [], []
    for image_id, anns in images.items():
        name = f"{image_id:012d}.jpg"
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=90)
        records.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for ann in anns:
            w, h = ann["bbox"][2:]
            annotations.append({**ann, "id": len(annotations) + 1, "area": float(w * h)})
    document = {"images": records, "annotations": annotations, "categories": CATEGORIES}
    path = root / "annotations" / f"instances_{split}2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def write_dataset(root: Path) -> Path:
    """A COCO-2017-like tree of tiny JPEGs with :data:`TRAIN` and :data:`VAL`."""
    _write_split(root, "train", TRAIN, seed=0)
    _write_split(root, "val", VAL, seed=1)
    return root


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "coco")


def _datamodule(root: Path, **kwargs) -> CocoDetectionDataModule:
    settings = {
        "train_scales": (HEIGHT,),
        "max_size": 1000,
        "eval_scale": HEIGHT // 2,
        "random_crop": 0.0,
        "hflip": 0.0,
        "mean": MEAN,
        "std": STD,
        "batch_size": 2,
        "num_workers": 0,
        "cache_dir": root.parent / "cache",
    }
    return CocoDetectionDataModule(root=root, **{**settings, **kwargs})


def _index(data: CocoDetectionDataModule, split: str, image_id: int) -> int:
    return data.split(split).image_ids.index(image_id)


def test_classes_are_contiguous_in_category_id_order_and_map_back(coco_root):
    data = _datamodule(coco_root)
    data.setup("fit")
    spec = data.spec
    assert spec.kind == DETECTION and data.KIND == DETECTION
    assert spec.class_names == ("cat", "dog")
    assert spec.metadata["category_ids"] == [3, 7]
    sample = data.dataset("train")[_index(data, "train", 10)]
    assert sample.target.labels.tolist() == [0, 1]
    assert [spec.metadata["category_ids"][i] for i in sample.target.labels] == [3, 7]
    assert spec.image_size == 1000 and spec.mean == MEAN and spec.std == STD


def test_crowd_excluded_degenerate_dropped_and_counted_and_empty_images_kept(coco_root, caplog):
    data = _datamodule(coco_root)
    with caplog.at_level(logging.WARNING, logger="glimpse.data.detection.coco"):
        data.setup("fit")
    assert data.spec.metadata["counts"]["train"] == {
        "images": 4,
        "boxes": 4,
        "crowd_excluded": 1,
        "degenerate_dropped": 3,
        "images_without_boxes": 1,
    }
    assert data.spec.metadata["counts"]["val"]["crowd_excluded"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "train split: dropped 3 of the 7 boxes" in warnings[0]
    assert data.split("train").image_ids == (10, 20, 30, 40)
    empty = data.dataset("train")[_index(data, "train", 20)]
    assert empty.target.boxes.shape == (0, 4) and empty.target.labels.shape == (0,)
    assert empty.target.boxes.dtype == torch.float32 and empty.target.labels.dtype == torch.int64
    kept = data.dataset("train")[_index(data, "train", 30)]
    assert kept.target.labels.tolist() == [1]


def test_eval_resize_gives_the_known_box_in_normalised_cxcywh(coco_root):
    data = _datamodule(coco_root)
    data.setup("validate")
    sample = data.dataset("val")[_index(data, "val", 100)]
    assert sample.image.shape == (3, HEIGHT // 2, WIDTH // 2)
    assert sample.image_id == 100 and sample.orig_size == (HEIGHT, WIDTH)
    x, y, w, h = CAT_BOX
    expected = [(x + w / 2) / WIDTH, (y + h / 2) / HEIGHT, w / WIDTH, h / HEIGHT]
    assert sample.target.boxes.tolist() == [pytest.approx(expected)]
    assert sample.target.labels.tolist() == [0]  # the crowd cat is no target


def test_a_flip_moves_the_boxes_with_the_pixels(coco_root):
    flipped = _datamodule(coco_root, hflip=1.0)  # trains at the images' own size
    flipped.setup("fit")
    plain = _datamodule(
        coco_root,
        eval_scale=HEIGHT,
        val_images="train2017",
        val_annotations="annotations/instances_train2017.json",
    )
    plain.setup("validate")
    index = _index(flipped, "train", 10)
    a, b = flipped.dataset("train")[index], plain.dataset("val")[index]
    assert a.image.shape == (3, HEIGHT, WIDTH) and torch.equal(a.image, b.image.flip(-1))
    assert torch.allclose(a.target.boxes[:, 0], 1 - b.target.boxes[:, 0])
    assert torch.allclose(a.target.boxes[:, 1:], b.target.boxes[:, 1:])
    assert torch.equal(a.target.labels, b.target.labels)


def test_batches_pad_to_the_largest_image_and_mask_the_padding(tmp_path):
    root = write_dataset(tmp_path / "coco")
    tall = root / "val2017" / f"{200:012d}.jpg"
    Image.new("RGB", (HEIGHT, WIDTH), (255, 255, 255)).save(tall)  # 48 wide, 64 high
    document = json.loads((root / "annotations/instances_val2017.json").read_text())
    document["images"][1].update(width=HEIGHT, height=WIDTH)
    (root / "annotations/instances_val2017.json").write_text(json.dumps(document))
    data = _datamodule(root, eval_scale=HEIGHT)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert isinstance(batch, DetectionBatch)
    assert batch.images.shape == (2, 3, WIDTH, WIDTH) and batch.mask.shape == (2, WIDTH, WIDTH)
    assert batch.sizes.tolist() == [[HEIGHT, WIDTH], [WIDTH, HEIGHT]]
    assert batch.orig_sizes.tolist() == [[HEIGHT, WIDTH], [WIDTH, HEIGHT]]
    assert batch.image_ids.tolist() == [100, 200]
    assert batch.mask[0, :HEIGHT].logical_not().all() and batch.mask[0, HEIGHT:].all()
    assert batch.mask[1, :, :HEIGHT].logical_not().all() and batch.mask[1, :, HEIGHT:].all()
    assert batch.images[0, :, HEIGHT:].eq(0).all() and batch.images[1, :, :, HEIGHT:].eq(0).all()
    assert batch.images[1, :, :, :HEIGHT].gt(0.9).all()  # the white image, unpadded part


def test_subset_fraction_is_seeded_and_a_val_subset_gets_its_own_annotation_file(coco_root):
    data = _datamodule(coco_root, subset_fraction=0.5, eval_subset_fraction=0.5, subset_seed=3)
    data.setup("fit")
    train_ids = data.split("train").image_ids
    assert len(train_ids) == 2 and set(train_ids) <= set(TRAIN)
    again = _datamodule(coco_root, subset_fraction=0.5, eval_subset_fraction=0.5, subset_seed=3)
    again.setup("fit")
    assert again.split("train").image_ids == train_ids
    val_ids = data.split("val").image_ids
    assert len(val_ids) == 1
    files = data.spec.metadata["annotation_files"]
    assert files["val"] == files["test"] == again.spec.metadata["annotation_files"]["val"]
    restricted = Path(files["val"])
    assert restricted.parent == coco_root.parent / "cache"
    assert sorted(p.name for p in restricted.parent.iterdir()) == [restricted.name]  # no .part
    coco = COCO(str(restricted))
    assert sorted(coco.imgs) == list(val_ids)
    expected = VAL[val_ids[0]]
    assert sorted(a["bbox"] for a in coco.dataset["annotations"]) == sorted(
        a["bbox"] for a in expected
    )
    whole = _datamodule(coco_root, subset_fraction=0.5)
    whole.setup("fit")
    assert whole.spec.metadata["annotation_files"]["val"] == str(
        coco_root / "annotations/instances_val2017.json"
    )
    assert len(whole.split("val").image_ids) == 2


def test_subset_categories_become_the_classes_and_restrict_images_and_val_file(coco_root):
    data = _datamodule(coco_root, subset_categories=["dog"])
    data.setup("fit")
    spec = data.spec
    assert spec.class_names == ("dog",) and spec.metadata["category_ids"] == [7]
    assert data.split("train").image_ids == (10, 30, 40)  # 20 has no box, so no dog
    for i in range(3):
        assert data.dataset("train")[i].target.labels.eq(0).all()
    assert spec.metadata["counts"]["train"]["crowd_excluded"] == 1
    assert spec.metadata["counts"]["train"]["degenerate_dropped"] == 1  # the zero-height dog
    assert data.split("val").image_ids == (200,)
    coco = COCO(spec.metadata["annotation_files"]["val"])
    assert sorted(coco.imgs) == [200] and sorted(coco.cats) == [7]
    assert [a["category_id"] for a in coco.dataset["annotations"]] == [7]
    with pytest.raises(ValueError, match="names bird, which the annotation file lacks"):
        _datamodule(coco_root, subset_categories=["dog", "bird"]).setup("fit")


def test_the_spec_round_trips_through_plain_values(coco_root):
    data = _datamodule(coco_root, subset_categories=["cat", "dog"], eval_subset_fraction=1.0)
    data.setup("fit")
    spec = data.spec
    restored = DataSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    assert set(spec.metadata["annotation_files"]) == {"val", "test"}
    assert spec.metadata["eval_scale"] == HEIGHT // 2 and spec.metadata["max_size"] == 1000


def test_files_with_other_categories_or_missing_images_are_refused(coco_root):
    path = coco_root / "annotations/instances_val2017.json"
    document = json.loads(path.read_text())
    (coco_root / "other.json").write_text(
        json.dumps({**document, "categories": [{"id": 3, "name": "cat"}]})
    )
    with pytest.raises(ValueError, match="other.json lists other categories than"):
        _datamodule(coco_root, val_annotations="other.json").setup("fit")
    (coco_root / "val2017" / f"{200:012d}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 images that .* are missing"):
        _datamodule(coco_root).setup("validate")
    with pytest.raises(FileNotFoundError, match="nothing.json does not exist"):
        _datamodule(coco_root, train_annotations="nothing.json").setup("fit")


def test_the_test_split_is_val_unless_given(coco_root):
    data = _datamodule(coco_root)
    data.setup("test")
    assert data.dataset("test") is data.dataset("val")
    data = _datamodule(
        coco_root,
        test_images="train2017",
        test_annotations=str(coco_root / "annotations/instances_train2017.json"),
    )
    data.setup("test")
    assert data.split("test").image_ids == (10, 20, 30, 40) and "val" not in data.splits
    assert data.spec.metadata["annotation_files"]["test"].endswith("instances_train2017.json")


def _rotated_jpeg(path: Path) -> None:
    """A 48 x 64 (w x h) JPEG whose EXIF orientation 6 shows it 64 x 48."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (HEIGHT, WIDTH), (200, 10, 10)).save(path, exif=exif.tobytes())


def test_images_are_read_on_the_grid_their_annotation_describes(tmp_path):
    path = tmp_path / "rotated.jpg"
    _rotated_jpeg(path)
    assert open_annotated(path, WIDTH, HEIGHT).size == (HEIGHT, WIDTH)  # as stored
    assert open_annotated(path, HEIGHT, WIDTH).size == (WIDTH, HEIGHT)  # upright
    with pytest.raises(ValueError, match="is 48x64 px but its annotation says 60x40"):
        open_annotated(path, 40, 60)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(CorruptImageError, match="bad.jpg cannot be decoded"):
        open_annotated(tmp_path / "bad.jpg", 4, 4)


def test_verify_reports_an_image_of_the_wrong_size_at_setup(coco_root):
    Image.new("RGB", (10, 10)).save(coco_root / "val2017" / f"{200:012d}.jpg")
    _datamodule(coco_root).setup("validate")  # not verified: found when loaded
    with pytest.raises(CorruptImageError, match="is 10x10 px but its annotation says 64x48"):
        _datamodule(coco_root, verify=True).setup("validate")


# Downloads -------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """COCO-2017-like archives of the generated dataset, by name."""
    tree = write_dataset(tmp_path_factory.mktemp("release") / "coco")
    members = {
        name: {
            p.relative_to(tree).as_posix(): p.read_bytes()
            for p in sorted(tree.rglob("*"))
            if p.is_file() and p.relative_to(tree).parts[0] == top
        }
        for name, top in (
            ("train2017.zip", "train2017"),
            ("val2017.zip", "val2017"),
            ("annotations_trainval2017.zip", "annotations"),
        )
    }
    for split in ("train", "val"):
        members["annotations_trainval2017.zip"][f"annotations/captions_{split}2017.json"] = b"{}"
    return {name: _zip(files) for name, files in members.items()}


def _serve(server, archives: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    for name, body in archives.items():
        server.routes[f"/coco/{ARCHIVES[name][0]}"] = (200, body, None)
    return server.url("/coco/"), {name: md5(body) for name, body in archives.items()}


def test_download_fetches_what_root_lacks_checks_md5s_and_extracts(server, archives, tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)  # already there: val2017.zip is not fetched
    for name in VAL:
        Image.new("RGB", (WIDTH, HEIGHT)).save(root / "val2017" / f"{name:012d}.jpg")
    base_url, sums = _serve(server, archives)
    data = _datamodule(root, download=True, base_url=base_url, md5=sums)
    data.prepare_data()
    assert sorted(server.requests) == [
        "/coco/annotations/annotations_trainval2017.zip",
        "/coco/zips/train2017.zip",
    ]
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "train2017", "val2017"]
    assert (root / "annotations/captions_val2017.json").is_file()  # the archive's other files
    data.setup("fit")
    assert data.spec.metadata["counts"]["train"]["images"] == 4
    _datamodule(root, download=True, base_url=base_url, md5=sums).prepare_data()
    assert len(server.requests) == 2  # nothing more to fetch


def test_a_download_with_the_wrong_md5_leaves_nothing(server, archives, tmp_path):
    root = tmp_path / "coco"
    base_url, _ = _serve(server, archives)
    with pytest.raises(
        DownloadError, match=f"expected {PUBLISHED_MD5['annotations_trainval2017.zip']}"
    ):
        _datamodule(root, download=True, base_url=base_url).prepare_data()
    assert list(root.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no COCO 2017 archive provides it"):
        _datamodule(root, download=True, train_images="mine").prepare_data()


def test_the_published_checksums_are_md5s_of_the_three_archives():
    assert set(PUBLISHED_MD5) == set(ARCHIVES)
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in PUBLISHED_MD5.values())
    assert {a for a, _ in ARCHIVES.values()} == {
        "zips/train2017.zip",
        "zips/val2017.zip",
        "annotations/annotations_trainval2017.zip",
    }


# Configs ----------------------------------------------------------------------------


def _data_config(name: str, tmp_path: Path, *overrides: str):
    overrides = (f"data={name}", f"paths.data_dir={tmp_path}", *overrides)
    return compose_train(list(overrides), tmp_path / "run").data


def test_the_configs_build_their_datamodules(coco_root, tmp_path):
    coco = instantiate(_data_config("coco", tmp_path, f"data.root={coco_root}"))
    assert isinstance(coco, CocoDetectionDataModule) and coco.max_size == 1333
    assert coco.train_scales == tuple(range(480, 801, 32)) and coco.eval_scale == 800
    assert coco.cache_dir == tmp_path / "coco_subsets"
    custom = instantiate(
        _data_config(
            "cocoformat",
            tmp_path,
            f"data.root={coco_root}",
            "data.train_images=train2017",
            "data.train_annotations=annotations/instances_train2017.json",
            "data.val_images=val2017",
            "data.val_annotations=annotations/instances_val2017.json",
            "data.num_workers=0",
        )
    )
    custom.setup("fit")
    assert custom.spec.class_names == ("cat", "dog")
    shapes = instantiate(_data_config("shapes_detection", tmp_path, "data.image_size=48"))
    assert isinstance(shapes, ShapesDetectionDataModule)
    assert shapes.train_scales == (48,) and shapes.max_size == 48 and shapes.eval_scale == 48


# Real COCO samples -----------------------------------------------------------------------

COCO_MINI = SHARED_DATA / "coco_mini"
COCO_TINY = SHARED_DATA / "coco_tiny" / "coco"


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco_mini absent")
def test_real_coco_mini_counts_and_batches(tmp_path):
    data = CocoDetectionDataModule(
        root=COCO_MINI,
        eval_scale=200,
        max_size=333,
        batch_size=2,
        num_workers=0,
        cache_dir=tmp_path,
        verify=True,
    )
    data.setup("fit")
    counts = data.spec.metadata["counts"]
    assert counts["train"] == {
        "images": 80,
        "boxes": 731,
        "crowd_excluded": 8,
        "degenerate_dropped": 0,
        "images_without_boxes": 0,
    }
    assert counts["val"] == {
        "images": 79,
        "boxes": 619,
        "crowd_excluded": 5,
        "degenerate_dropped": 0,
        "images_without_boxes": 0,
    }
    assert len(data.spec.class_names) == 80 and data.spec.class_names[0] == "person"
    assert data.spec.metadata["category_ids"][-1] == 90
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape[0] == 2 and max(batch.images.shape[-2:]) <= 333
    for height, width in batch.sizes.tolist():
        assert min(height, width) == 200 or max(height, width) == 333
    dogs = CocoDetectionDataModule(
        root=COCO_MINI, subset_categories=["dog"], num_workers=0, cache_dir=tmp_path
    )
    dogs.setup("validate")
    restricted = COCO(dogs.spec.metadata["annotation_files"]["val"])
    assert sorted(restricted.imgs) == sorted(dogs.split("val").image_ids)
    assert sorted(restricted.cats) == [18]


@pytest.mark.skipif(not COCO_TINY.is_dir(), reason="../shared/data/coco_tiny absent")
def test_real_coco_tiny_reads_its_one_image_per_split():
    data = CocoDetectionDataModule(
        root=COCO_TINY,
        train_images="images/train2017",
        val_images="images/val2017",
        eval_scale=200,
        max_size=400,
        num_workers=0,
        verify=True,
    )
    data.setup("fit")
    assert data.split("train").image_ids == (391895,)
    assert data.split("val").image_ids == (397133,)
    counts = data.spec.metadata["counts"]
    assert counts["train"]["boxes"] == 4 and counts["val"]["boxes"] == 19
    assert counts["train"]["crowd_excluded"] == counts["val"]["crowd_excluded"] == 0
    sample = data.dataset("val")[0]
    assert sample.orig_size == (427, 640) and sample.image.shape == (3, 200, 299)
    categories = [data.spec.metadata["category_ids"][i] for i in sample.target.labels]
    assert categories[:3] == [44, 67, 1]  # bottle, dining table, person: the file's order
