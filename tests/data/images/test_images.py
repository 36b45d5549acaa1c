"""The ImageFolder datamodules on generated trees in the real layout, and on real Imagenette
images when ../shared/data/imagenette2_sample exists."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image

from glimpse.batches import LABELLED_IMAGES, LabelledImages
from glimpse.data.images.decode import ALPHA_BACKGROUND, CorruptImageError, open_rgb
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.images.imagenette import IMAGENETTE_CLASSES
from glimpse.data.images.transforms import eval_transform, train_transform
from glimpse.data.synthetic.shapes import KINDS, write_imagefolder

SIZE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENETTE = SHARED_DATA / "imagenette2_sample"


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """A shapes ImageFolder tree: train/ and val/, 7 classes, 4 images each (3 + 1)."""
    return write_imagefolder(tmp_path_factory.mktemp("shapes") / "tree", 4, SIZE, seed=0)


def _datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root, image_size=SIZE, batch_size=4, num_workers=0, crop_ratio=1.0, **kwargs
    )


def _copy_tree(source: Path, target: Path) -> Path:
    for path in source.rglob("*.png"):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(path.read_bytes())
    return target


def _noise_jpeg(path: Path, side: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path.read_bytes()


def test_shapes_tree_gives_normalised_batches_labels_and_a_spec(shapes_root):
    data = _datamodule(shapes_root)
    data.setup("fit")
    spec = data.spec
    assert spec.kind == LABELLED_IMAGES == ImageFolderDataModule.KIND
    assert spec.class_names == tuple(sorted(KINDS))
    assert spec.image_size == SIZE and spec.mean == MEAN and spec.std == STD
    assert spec.metadata["root"] == str(shapes_root)
    assert len(data.dataset("train")) == 7 * 3 and len(data.dataset("val")) == 7
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, LabelledImages)
    assert batch.images.shape == (4, 3, SIZE, SIZE) and batch.images.dtype == torch.float32
    assert batch.labels.dtype == torch.int64
    assert batch.images.min() < -0.5 and batch.images.max() > 0.5  # normalised, not in [0, 1]
    val = next(iter(data.val_dataloader()))
    path, label = data.dataset("val").samples[0]
    assert Path(path).parent.name == spec.class_names[label]
    expected = eval_transform(SIZE, 1.0, MEAN, STD)(open_rgb(path))
    torch.testing.assert_close(val.images[0], expected)
    data.setup("test")
    assert data.dataset("test") is data.dataset("val")  # no root/test: test on val


def test_training_drops_the_last_partial_batch_and_evaluation_keeps_every_image(shapes_root):
    data = _datamodule(shapes_root)  # 21 train and 7 val images in batches of 4
    data.setup("fit")
    assert [len(b.labels) for b in data.train_dataloader()] == [4] * 5
    assert [len(b.labels) for b in data.val_dataloader()] == [4, 3]
    data.batch_size = 32  # more than the split holds: one partial batch is still trained on
    assert [len(b.labels) for b in data.train_dataloader()] == [21]


def test_test_split_is_read_from_root_test_when_present(shapes_root, tmp_path):
    root = _copy_tree(shapes_root, tmp_path / "tree")
    (root / "test" / "circle").mkdir(parents=True)
    first = sorted((root / "val" / "circle").iterdir())[0]
    first.replace(root / "test" / "circle" / "a.png")
    data = _datamodule(root)
    data.setup("test")
    assert [Path(p).name for p, _ in data.dataset("test").samples] == ["a.png"]
    assert "val" not in data.datasets  # the test stage reads only what it needs


def test_class_names_map_folders_to_readable_names(shapes_root):
    names = {kind: kind.upper() for kind in KINDS}
    data = _datamodule(shapes_root, class_names=names)
    data.setup("validate")
    assert data.spec.class_names == tuple(k.upper() for k in sorted(KINDS))
    assert data.spec.metadata["class_folders"] == sorted(KINDS)
    del names["star"]
    with pytest.raises(ValueError, match="no name for the class folder.s. star"):
        _datamodule(shapes_root, class_names=names).setup("fit")


def test_a_val_class_missing_from_train_is_refused(shapes_root, tmp_path):
    root = _copy_tree(shapes_root, tmp_path / "tree")
    (root / "val" / "blob").mkdir()
    Image.new("RGB", (SIZE, SIZE)).save(root / "val" / "blob" / "x.png")
    with pytest.raises(ValueError, match="class folder.s. blob that .* lacks"):
        _datamodule(root).setup("fit")


def test_missing_val_folder_names_the_layout(shapes_root, tmp_path):
    root = _copy_tree(shapes_root, tmp_path / "tree")
    for path in (root / "val").rglob("*.png"):
        path.unlink()
    for folder in sorted((root / "val").iterdir()):
        folder.rmdir()
    (root / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        _datamodule(root).setup("fit")


def _pixel(path: Path) -> tuple[int, int, int]:
    image = open_rgb(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    return image.getpixel((3, 2))


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("gray.png", lambda: Image.new("L", (8, 6), 77), (77, 77, 77)),
        ("gray16.png", lambda: Image.new("I;16", (8, 6), 257 * 200), (200, 200, 200)),
        ("palette.png", lambda: Image.new("RGB", (8, 6), (10, 200, 30)).quantize(4), (10, 200, 30)),
        ("opaque.png", lambda: Image.new("RGBA", (8, 6), (10, 200, 30, 255)), (10, 200, 30)),
        ("clear.png", lambda: Image.new("RGBA", (8, 6), (10, 200, 30, 0)), ALPHA_BACKGROUND),
        ("cmyk.jpg", lambda: Image.new("CMYK", (8, 6), (0, 255, 255, 0)), (255, 0, 0)),
    ],
)
def test_every_mode_is_decoded_as_rgb(tmp_path, name, make, expected):
    path = tmp_path / name
    make().save(path)
    assert Image.open(path).mode != "RGB"
    assert np.allclose(_pixel(path), expected, atol=3)


def test_a_transparent_palette_entry_is_composited(tmp_path):
    image = Image.new("P", (8, 6), 1)
    image.putpalette([0, 0, 0, 10, 200, 30])
    image.info["transparency"] = 1
    image.save(tmp_path / "p.png", transparency=1)
    assert _pixel(tmp_path / "p.png") == ALPHA_BACKGROUND


def test_exif_orientation_is_honoured(tmp_path):
    # Stored 40 wide and 20 high, left half red; orientation 6 means "rotate 90 degrees
    # clockwise to display", which puts the red half on top of a 20 x 40 picture.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = open_rgb(tmp_path / "rotated.jpg")
    assert upright.size == (20, 40)
    assert np.allclose(upright.getpixel((10, 5)), (255, 0, 0), atol=20)
    assert np.allclose(upright.getpixel((10, 35)), (0, 0, 255), atol=20)


def _corrupt_tree(shapes_root: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the tree with a truncated JPEG and a non-image .jpg in train/."""
    root = _copy_tree(shapes_root, tmp_path / "tree")
    truncated = root / "train" / "circle" / "truncated.jpg"
    data = _noise_jpeg(truncated)
    truncated.write_bytes(data[: len(data) // 2])
    garbage = root / "train" / "star" / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    return root, truncated, garbage


def test_a_truncated_jpeg_fails_setup_naming_the_file(shapes_root, tmp_path):
    root, truncated, _ = _corrupt_tree(shapes_root, tmp_path)
    with pytest.raises(CorruptImageError) as error:
        _datamodule(root).setup("fit")
    message = str(error.value)
    assert str(truncated) in message and "truncated" in message
    assert "2 of the 23 images" in message and "data.skip_corrupt=true" in message


def test_skip_corrupt_leaves_bad_files_out_and_counts_them(shapes_root, tmp_path, caplog):
    root, truncated, garbage = _corrupt_tree(shapes_root, tmp_path)
    data = _datamodule(root, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="glimpse.data.images.decode"):
        data.setup("fit")
    paths = {Path(p) for p, _ in data.dataset("train").samples}
    assert len(paths) == 21 and truncated not in paths and garbage not in paths
    assert len(data.dataset("train").targets) == 21
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "Skipped 2 unreadable image(s) of the 23 in the train split" in warning.getMessage()
    assert str(garbage) in warning.getMessage()


def test_without_verification_a_bad_file_fails_when_loaded_naming_it(shapes_root, tmp_path):
    root, truncated, _ = _corrupt_tree(shapes_root, tmp_path)
    data = _datamodule(root, verify=False)
    data.setup("fit")
    index = [Path(p) for p, _ in data.dataset("train").samples].index(truncated)
    with pytest.raises(CorruptImageError, match=str(truncated)):
        data.dataset("train")[index]
    with pytest.raises(ValueError, match="needs data.verify=true"):
        _datamodule(root, verify=False, skip_corrupt=True)


@pytest.mark.parametrize("augment", [None, "trivialaugment", "randaugment"])
def test_train_transform_gives_normalised_square_float_images(augment):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    transform = train_transform(SIZE, (0.5, 1.0), 0.5, augment, random_erasing=0.5)
    out = transform(image)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="auto_augment"):
        train_transform(SIZE, auto_augment="autoaugment")


def test_eval_transform_resizes_crops_and_normalises():
    grey = Image.new("RGB", (60, 40), (128, 64, 255))
    out = eval_transform(SIZE, 0.8, MEAN, STD)(grey)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    expected = (torch.tensor([128, 64, 255]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[:, 5, 7], expected)
    # The shorter side becomes int(32 / 0.8) = 40; the centre 32 x 32 is kept.
    ramp = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1)))
    plain = eval_transform(SIZE, 0.8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(ramp.convert("RGB"))
    assert plain[0, 0, 0] * 255 == pytest.approx(14 * 4, abs=1)


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="../shared/data/imagenette2_sample absent")
def test_real_imagenette_sample_loads_with_its_grayscale_images_as_rgb():
    data = ImageFolderDataModule(
        IMAGENETTE, image_size=SIZE, batch_size=8, num_workers=0, class_names=IMAGENETTE_CLASSES
    )
    data.setup("fit")
    assert len(data.spec.class_names) == 10
    assert data.spec.class_names[0] == "tench" and data.spec.class_names[-1] == "parachute"
    assert len(data.dataset("train")) == 500 and len(data.dataset("val")) == 200
    samples = data.dataset("train").samples + data.dataset("val").samples
    grayscale = [path for path, _ in samples if Image.open(path).mode == "L"]
    assert len(grayscale) == 15
    for path in grayscale:
        image = open_rgb(path)
        assert image.mode == "RGB"
        red, green, blue = (np.asarray(image)[..., c] for c in range(3))
        assert np.array_equal(red, green) and np.array_equal(green, blue)
    gray_index = [p for p, _ in data.dataset("train").samples].index(
        next(p for p in grayscale if "/train/" in p)
    )
    image, _ = data.dataset("train")[gray_index]
    assert image.shape == (3, SIZE, SIZE)
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (8, 3, SIZE, SIZE)
