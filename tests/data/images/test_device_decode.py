"""``data.decode_device=cuda``: JPEG bytes from the workers, decoded and augmented where the batch
goes. The whole path runs here with the batch on the CPU (``decode_jpeg`` on the CPU, the
same code as on a GPU but for the decoder), and once on CUDA when a GPU is present.

Tolerance: Pillow and torchvision both decode with libjpeg-turbo (islow IDCT, fancy chroma
upsampling), which give identical pixels today; the CPU comparisons still allow
:data:`CPU_LEVELS` levels of 255 so that a libjpeg-turbo release with a different rounding in
either wheel does not fail them, which is far below what a wrong crop, flip, orientation or
normalisation changes (tens of levels on these images). nvJPEG computes the IDCT and chroma
upsampling differently, so the CUDA test bounds the mean difference instead of the largest.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from glimpse.batches import LabelledImages
from glimpse.data.images.decode import CorruptImageError, open_rgb
from glimpse.data.images.device_decode import (
    EXIF_ORIENTATION,
    EncodedImages,
    apply_exif_orientation,
    decode_to_labelled_images,
    read_encoded,
)
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.prefetch import PrefetchingLoader

SIZE = 32
BATCH = 4
STD = (0.229, 0.224, 0.225)
#: Largest allowed difference in levels of 255 between the two decoders on the CPU.
CPU_LEVELS = 2
#: One level of 255 after normalisation, at the smallest std.
LEVEL = 1 / 255 / min(STD)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour gradients with mild noise: JPEG-friendly like a photo, and asymmetric so a
    wrong flip, crop or rotation shows."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    weights = rng.uniform(-1, 1, (3, 3))
    planes = [w[0] * xs / width + w[1] * ys / height + w[2] for w in weights]
    pixels = np.stack(planes, axis=-1) * 90 + 128 + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def save_jpeg(image: Image.Image, path: Path, orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    """train/ (2 classes x 6) and val/ (2 x 3) of landscape and portrait JPEGs of varied sizes."""
    root = tmp_path_factory.mktemp("jpegs")
    seed = 0
    for split, count in (("train", 6), ("val", 3)):
        for label in ("a", "b"):
            for index in range(count):
                width, height = (72, 54) if index % 2 else (50, 66)
                save_jpeg(photo(width, height, seed), root / split / label / f"{index}.jpg")
                seed += 1
    return root


def datamodule(root: Path, decode_device: str, **kwargs) -> ImageFolderDataModule:
    data = ImageFolderDataModule(
        root,
        image_size=SIZE,
        batch_size=BATCH,
        num_workers=0,
        decode_device=decode_device,
        **kwargs,
    )
    data.setup("fit")
    return data


def on_device(data: ImageFolderDataModule, batch, device: torch.device) -> LabelledImages:
    """What Lightning does with a batch: transfer, then the after-transfer hook."""
    moved = data.transfer_batch_to_device(batch, device, 0)
    return data.on_after_batch_transfer(moved, 0)


def batches(data: ImageFolderDataModule, split: str, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    return [on_device(data, batch, device) for batch in loader]


def assert_close_in_levels(actual: torch.Tensor, expected: torch.Tensor, levels: float) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    difference = (actual.cpu() - expected.cpu()).abs().max().item()
    assert difference <= levels * LEVEL + 1e-5, f"{difference / LEVEL:.1f} levels of 255 apart"


def test_loader_yields_encoded_bytes_and_labels(jpeg_root):
    data = datamodule(jpeg_root, "cuda")
    batch = next(iter(data.val_dataloader()))
    assert isinstance(batch, EncodedImages) and batch.split == "val"
    assert len(batch.images) == BATCH and all(i.dtype == torch.uint8 for i in batch.images)
    assert all(i.ndim == 1 and bytes(i[:3].tolist()) == b"\xff\xd8\xff" for i in batch.images)
    assert batch.labels.dtype == torch.int64 and batch.orientations.tolist() == [1] * BATCH
    moved = data.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert all(i.device.type == "cpu" for i in moved.images)


@pytest.mark.parametrize("split", ["train", "val"])
def test_batches_match_the_pil_path(jpeg_root, split):
    """Same seed, so the same samples and the same random crops and flips on both paths: the
    batches agree in shape, dtype, labels and (to the decoders' tolerance) in value."""
    cpu = batches(datamodule(jpeg_root, "cpu"), split, torch.device("cpu"))
    device = batches(datamodule(jpeg_root, "cuda"), split, torch.device("cpu"))
    assert len(cpu) == len(device) > 1
    for expected, actual in zip(cpu, device, strict=True):
        assert isinstance(actual, LabelledImages)
        assert actual.images.shape[1:] == (3, SIZE, SIZE)
        assert type(actual.images) is torch.Tensor is type(expected.images)
        assert torch.equal(actual.labels, expected.labels)
        assert_close_in_levels(actual.images, expected.images, CPU_LEVELS)


def test_batches_are_normalised_like_the_pil_path(jpeg_root):
    """Per-channel statistics of a whole epoch, independent of which crops were drawn."""
    cpu = batches(datamodule(jpeg_root, "cpu"), "train", torch.device("cpu"), seed=1)
    device = batches(datamodule(jpeg_root, "cuda"), "train", torch.device("cpu"), seed=2)
    cpu, device = (torch.cat([b.images for b in side]) for side in (cpu, device))
    assert device.dtype == torch.float32
    assert torch.allclose(device.mean(dim=(0, 2, 3)), cpu.mean(dim=(0, 2, 3)), atol=0.25)
    assert torch.allclose(device.std(dim=(0, 2, 3)), cpu.std(dim=(0, 2, 3)), rtol=0.3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    path = save_jpeg(photo(40, 24, seed=orientation), tmp_path / "o.jpg", orientation)
    encoded = read_encoded(path, fallback=open_rgb)
    assert encoded.orientation == orientation
    expected = torch.from_numpy(np.asarray(open_rgb(path)).copy()).permute(2, 0, 1)
    batch = EncodedImages([encoded.data], torch.tensor([orientation]), torch.tensor([0]), (), "val")
    upright = decode_to_labelled_images(batch, lambda image: image, open_rgb).images[0]
    assert upright.shape == expected.shape == ((3, 40, 24) if orientation >= 5 else (3, 24, 40))
    assert (upright.int() - expected.int()).abs().max() <= CPU_LEVELS


def test_apply_exif_orientation_inverts_to_the_identity_for_upright():
    image = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert apply_exif_orientation(image, 1) is image
    assert torch.equal(apply_exif_orientation(image, 6), torch.rot90(image, -1, (1, 2)))
    for orientation in (2, 3, 4, 5):  # each its own inverse
        twice = apply_exif_orientation(apply_exif_orientation(image, orientation), orientation)
        assert torch.equal(twice, image)


def test_other_formats_are_decoded_on_the_cpu_like_the_pil_path(tmp_path):
    """A transparent PNG (composited on white by open_rgb) and a CMYK JPEG (which the device
    decoder does not take) next to RGB JPEGs in one split."""
    root = tmp_path / "mixed"
    rgba = np.dstack([np.asarray(photo(40, 30, 0)), np.full((30, 40), 128, np.uint8)])
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            save_jpeg(photo(40, 30, 1), folder / "0.jpg")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, "RGBA").save(folder / "1.png")
            photo(30, 40, 2).convert("CMYK").save(folder / "2.jpg", quality=90)
    for name in ("1.png", "2.jpg"):
        encoded = read_encoded(root / "val" / "a" / name, fallback=open_rgb)
        assert encoded.data.shape[0] == 3 and encoded.data.ndim == 3
    cpu = batches(datamodule(root, "cpu", crop_ratio=1.0), "val", torch.device("cpu"))
    device = batches(datamodule(root, "cuda", crop_ratio=1.0), "val", torch.device("cpu"))
    for expected, actual in zip(cpu, device, strict=True):
        assert_close_in_levels(actual.images, expected.images, CPU_LEVELS)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_undecodable_files_name_the_file(tmp_path, jpeg_root, damage):
    good = (jpeg_root / "val" / "a" / "0.jpg").read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image" if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        encoded = read_encoded(bad, fallback=open_rgb)
        batch = EncodedImages([encoded.data], torch.tensor([1]), torch.tensor([0]), (str(bad),), "")
        decode_to_labelled_images(batch, lambda image: image, open_rgb)


def test_rejects_an_unknown_decode_device(jpeg_root):
    with pytest.raises(ValueError, match="decode_device='gpu' must be cpu or cuda"):
        ImageFolderDataModule(jpeg_root, decode_device="gpu")


class TinyClassifier(L.LightningModule):
    """Records the type, dtype and shape of each batch the trainer hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3 * SIZE * SIZE, 2)
        self.seen: list[tuple[str, type, torch.dtype, tuple[int, ...]]] = []

    def _step(self, stage: str, batch) -> torch.Tensor:
        self.seen.append((stage, type(batch), batch.images.dtype, tuple(batch.images.shape)))
        return F.cross_entropy(self.net(batch.images.flatten(1)), batch.labels)

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        return self._step("val", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_calls_the_datamodule_hooks(jpeg_root, tmp_path):
    data = ImageFolderDataModule(
        jpeg_root, image_size=SIZE, batch_size=BATCH, num_workers=0, decode_device="cuda"
    )
    model = TinyClassifier()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    shape = (BATCH, 3, SIZE, SIZE)
    assert [stage for stage, *_ in model.seen] == ["train", "train", "val"]
    assert {tuple(rest) for _, *rest in model.seen} == {(LabelledImages, torch.float32, shape)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decodes_on_cuda_close_to_the_pil_path(jpeg_root):
    cuda = torch.device("cuda")
    cpu = batches(datamodule(jpeg_root, "cpu"), "val", torch.device("cpu"))
    device = batches(datamodule(jpeg_root, "cuda", pin_memory=True), "val", cuda)
    for expected, actual in zip(cpu, device, strict=True):
        assert actual.images.device.type == "cuda" and actual.labels.device.type == "cuda"
        assert actual.images.shape == expected.images.shape
        difference = (actual.images.cpu() - expected.images).abs()
        assert difference.mean() <= 2 * LEVEL, f"{difference.mean() / LEVEL:.2f} levels apart"
        assert torch.equal(actual.labels.cpu(), expected.labels)


def test_a_batch_without_jpegs_never_reaches_the_jpeg_decoder(tmp_path):
    path = tmp_path / "x.png"
    photo(20, 10, 0).save(path)
    encoded = read_encoded(path, fallback=open_rgb)
    batch = EncodedImages([encoded.data], torch.tensor([1]), torch.tensor([0]), (str(path),), "")
    image = decode_to_labelled_images(batch, lambda image: image, open_rgb).images[0]
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(np.array(photo(20, 10, 0))))


def test_under_a_trainer_the_loader_decodes_ahead_what_the_hooks_decode(jpeg_root):
    data = datamodule(jpeg_root, "cuda")
    expected = batches(data, "val", torch.device("cpu"))
    data.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    loader = data.val_dataloader()
    assert isinstance(loader, PrefetchingLoader) and loader.device == torch.device("cpu")
    prefetched = list(loader)
    assert len(prefetched) == len(expected)
    for batch, reference in zip(prefetched, expected, strict=True):
        assert isinstance(batch, LabelledImages)
        assert torch.equal(batch.images, reference.images)
        assert torch.equal(batch.labels, reference.labels)
        # Lightning's own transfer and hook leave a prepared batch as it is.
        assert torch.equal(on_device(data, batch, torch.device("cpu")).images, batch.images)
