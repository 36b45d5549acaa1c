"""The encoder-feature cache: computed once per split with the task's frozen encoder, saved
atomically, reloaded, recomputed for other images or another encoder, and served as
``(B, N, D)`` batches; with a stand-in task whose encoder is a small conv net."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from glimpse.data.captions.feature_cache import cached_features, load_features, save_features
from glimpse.data.images.decode import open_rgb
from glimpse.data.synthetic.datamodules import ShapesCaptionsDataModule

SIZE = 16


class GridEncoder(nn.Module):
    """``(B, 3, 16, 16)`` -> ``(B, 16, 8)``: a 4x4 grid of 8 channels; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.dropout = nn.Dropout(0.5)  # makes train mode visible in the output
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return self.dropout(self.conv(images)).flatten(2).transpose(1, 2)


class StandIn(L.LightningModule):
    """A task exposing ``feature_encoder()`` as the captioning task does."""

    def __init__(self, frozen: bool = True, key: str = "grid-v1") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder, self.frozen, self.key = GridEncoder(), frozen, key
        self.head = nn.Linear(8, 1)
        self.grid_shapes: dict[str, list[tuple[int, ...]]] = {"train": [], "val": []}

    def feature_encoder(self) -> tuple[nn.Module, str] | None:
        return (self.encoder, self.key) if self.frozen else None

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.grid_shapes["train"].append(tuple(batch.images.shape))
        return self.head(batch.images).mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        self.grid_shapes["val"].append(tuple(batch.images.shape))

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.1)


def attach(data: L.LightningDataModule, module: L.LightningModule) -> None:
    """What a Trainer gives a datamodule, as far as the cache needs it."""
    data.trainer = SimpleNamespace(
        lightning_module=module, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    ShapesCaptionsDataModule(data_dir=folder, num_images=16, image_size=SIZE).prepare_data()
    return folder


def datamodule(shapes_dir: Path, cache_dir: Path, **kwargs) -> ShapesCaptionsDataModule:
    data = ShapesCaptionsDataModule(
        data_dir=shapes_dir,
        num_images=16,
        image_size=SIZE,
        batch_size=4,
        eval_batch_size=2,
        num_workers=0,
        cache_features=True,
        cache_dir=cache_dir,
        **kwargs,
    )
    data.setup()
    return data


def test_batches_hold_the_encoder_grids_computed_once(shapes_dir, tmp_path, caplog):
    data = datamodule(shapes_dir, tmp_path / "cache")
    module = StandIn()
    module.train()
    attach(data, module)
    with caplog.at_level(logging.INFO, logger="glimpse.data.captions.feature_cache"):
        batch = next(iter(data.train_dataloader()))
    assert "Computed the encoder features of 12 images (16x8 per image)" in caplog.text
    assert batch.images.shape == (4, 16, 8) and batch.images.dtype == torch.float32
    assert batch.captions.shape[0] == 4 and batch.caption_image.tolist() == [0, 1, 2, 3]
    assert module.encoder.training  # put back in the mode it was in

    train = data.dataset("train")
    with torch.no_grad():
        module.encoder.eval()
        images = torch.stack([data.transforms["eval"](open_rgb(p)) for p in train.paths])
        expected = module.encoder(images)
    assert torch.allclose(train.features.float(), expected, atol=2e-3, rtol=2e-3)
    path = data.feature_cache_path("train", "grid-v1")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["train.pt"]

    seen = module.encoder.images_seen
    list(data.train_dataloader())
    val = next(iter(data.val_dataloader()))
    assert val.images.shape == (2, 16, 8) and val.captions.shape[0] == 10
    assert module.encoder.images_seen == seen + 2  # train not again; the 2 val images once


def test_a_new_datamodule_reads_the_cache_and_another_encoder_key_does_not(shapes_dir, tmp_path):
    cache = tmp_path / "cache"
    first = datamodule(shapes_dir, cache)
    attach(first, StandIn())
    first_batch = next(iter(first.val_dataloader()))

    again = datamodule(shapes_dir, cache)
    module = StandIn()
    attach(again, module)
    batch = next(iter(again.val_dataloader()))
    assert module.encoder.images_seen == 0
    assert torch.equal(batch.images, first_batch.images)

    other = datamodule(shapes_dir, cache)
    module = StandIn(key="grid-v2")
    attach(other, module)
    next(iter(other.val_dataloader()))
    assert module.encoder.images_seen == 2
    assert len(list(cache.iterdir())) == 2  # one folder per encoder key


def test_a_trainer_serves_cached_grids_to_the_task(shapes_dir, tmp_path):
    data = datamodule(shapes_dir, tmp_path / "cache")
    module = StandIn()
    trainer = L.Trainer(
        accelerator="cpu",
        fast_dev_run=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert module.grid_shapes == {"train": [(4, 16, 8)] * 2, "val": [(2, 16, 8)]}
    assert data.feature_cache_path("train", "grid-v1").is_file()
    assert data.feature_cache_path("val", "grid-v1").is_file()


def test_a_trained_encoder_cannot_be_cached(shapes_dir, tmp_path):
    data = datamodule(shapes_dir, tmp_path / "cache")
    attach(data, StandIn(frozen=False))
    with pytest.raises(ValueError, match="set data.cache_features=false or freeze the encoder"):
        data.train_dataloader()
    assert not (tmp_path / "cache").exists()


def test_features_of_other_images_are_computed_again(tmp_path, caplog):
    path = tmp_path / "cache" / "val.pt"
    save_features(path, ["a.jpg", "b.jpg"], torch.ones(2, 3, 4, dtype=torch.float16))
    assert [p.name for p in path.parent.iterdir()] == ["val.pt"]  # no temporary file left
    stored = load_features(path, ["a.jpg", "b.jpg"])
    assert stored.dtype == torch.float16 and torch.equal(stored, torch.ones(2, 3, 4).half())
    with caplog.at_level(logging.WARNING):
        assert load_features(path, ["a.jpg", "c.jpg"]) is None
    assert "holds features of other images" in caplog.text
    assert load_features(tmp_path / "none.pt", ["a.jpg"]) is None


def test_cached_features_extracts_in_batches_and_saves(shapes_dir, tmp_path):
    data = ShapesCaptionsDataModule(data_dir=shapes_dir, num_images=16, image_size=SIZE)
    data.setup("validate")
    split = data.split("train")
    encoder = GridEncoder()
    path = tmp_path / "c" / "train.pt"
    features = cached_features(
        path, split.names, split.paths, encoder, data.transforms["eval"], "cpu", batch_size=5
    )
    assert features.shape == (12, 16, 8) and features.dtype == torch.float16
    assert encoder.images_seen == 12
    assert torch.equal(load_features(path, split.names), features)
