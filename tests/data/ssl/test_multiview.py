"""MultiViewDataModule on a generated shapes tree (views, labels, evaluation loaders, spec,
compatibility), every ssl_* config composed and built, a Lightning loop over its loaders, and the
real ../shared/data/imagenette2_sample when it exists."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import CONF, SHARED_DATA, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from glimpse.batches import MULTI_VIEW_IMAGES, LabelledImages, MultiViewImages
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.images.imagenette import IMAGENETTE_CLASSES
from glimpse.data.images.transforms import eval_transform
from glimpse.data.spec import DataSpec
from glimpse.data.ssl.multiview import MultiViewDataModule, labelled_loader
from glimpse.data.synthetic.shapes import KINDS, write_imagefolder
from glimpse.tasks.compatibility import (
    IncompatibleConfigError,
    check_compatible,
    data_configs_by_kind,
)

SIZE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SSL_CONFIGS = ["ssl_imagefolder", "ssl_imagenet_subset", "ssl_imagenette", "ssl_imagewoof"]
SSL_CONFIGS = sorted([*SSL_CONFIGS, "ssl_shapes"])
IMAGENETTE = SHARED_DATA / "imagenette2_sample"
MULTICROP = {"kind": "multicrop", "num_local": 3, "local_size": 16}


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """A shapes ImageFolder tree: train/ and val/, 7 classes, 4 images each (3 + 1)."""
    return write_imagefolder(tmp_path_factory.mktemp("shapes") / "tree", 4, SIZE, seed=0)


def _base(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        root, image_size=SIZE, batch_size=4, num_workers=0, crop_ratio=1.0, **kwargs
    )


def _data(root: Path, views: dict | None = None, batch_size: int = 4) -> MultiViewDataModule:
    data = MultiViewDataModule(_base(root), views, batch_size=batch_size, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    return data


def test_multicrop_batches_hold_two_global_then_the_local_views_and_every_label(shapes_root):
    data = _data(shapes_root, MULTICROP, batch_size=21)  # the whole train split, one batch
    (batch,) = list(data.train_dataloader())
    assert isinstance(batch, MultiViewImages) and len(batch.views) == 5
    assert [tuple(v.shape) for v in batch.views] == [(21, 3, 32, 32)] * 2 + [(21, 3, 16, 16)] * 3
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in batch.views)
    assert batch.labels.dtype == torch.int64
    targets = data.base.dataset("train").targets
    assert sorted(batch.labels.tolist()) == sorted(targets)  # every image once, labels kept
    assert batch.labels.tolist() != targets  # shuffled (21! orders: not the file order)


def test_byol_batches_hold_two_views_and_drop_the_last_partial_batch(shapes_root):
    data = _data(shapes_root, {"kind": "byol"}, batch_size=4)
    batches = list(data.train_dataloader())
    assert len(batches) == 21 // 4
    assert all([tuple(v.shape) for v in b.views] == [(4, 3, 32, 32)] * 2 for b in batches)
    views, label = data.train_dataloader().dataset[5]
    assert label == data.base.dataset("train").samples[5][1]  # each image keeps its label
    assert not torch.equal(views[0], views[1])  # two random views, not copies


def test_val_loaders_are_the_labelled_train_split_then_val_unaugmented_in_file_order(
    shapes_root,
):
    data = _data(shapes_root, MULTICROP)
    bank, val = data.val_dataloader()
    plain = eval_transform(SIZE, 1.0, MEAN, STD)
    for loader, split in ((bank, "train"), (val, "val")):
        samples = data.base.dataset(split).samples
        assert len(loader.dataset) == len(samples) == {"train": 21, "val": 7}[split]
        batches = list(loader)
        assert all(isinstance(b, LabelledImages) for b in batches)
        assert torch.cat([b.labels for b in batches]).tolist() == [s[1] for s in samples]
        first = batches[0]
        torch.testing.assert_close(first.images[1], plain(open_rgb(samples[1][0])))
        torch.testing.assert_close(next(iter(loader)).images, first.images)  # no randomness


def test_test_loaders_are_the_train_split_then_test_which_is_val_without_a_test_folder(
    shapes_root,
):
    data = MultiViewDataModule(_base(shapes_root), batch_size=8, num_workers=0)
    data.setup("test")
    bank, test = data.test_dataloader()
    assert len(bank.dataset) == 21 and len(test.dataset) == 7
    assert test.dataset.samples == data.base.dataset("val").samples
    assert bank.batch_size == test.batch_size == 8


def test_spec_is_the_bases_with_the_multi_view_kind_and_the_view_recipe(shapes_root):
    data = _data(shapes_root, MULTICROP)
    spec = data.spec
    assert spec.kind == MULTI_VIEW_IMAGES == MultiViewDataModule.KIND
    assert spec.class_names == tuple(sorted(KINDS)) == data.base.spec.class_names
    assert (spec.image_size, spec.mean, spec.std) == (SIZE, MEAN, STD)
    assert spec.metadata["root"] == str(shapes_root)
    assert spec.metadata["base"] == "glimpse.data.images.image_folder.ImageFolderDataModule"
    views = spec.metadata["views"]
    assert views["kind"] == "multicrop" and views["num_local"] == 3
    assert views["sizes"] == [32, 32, 16, 16, 16] and views["global_scale"] == [0.4, 1.0]
    assert DataSpec.from_dict(spec.to_dict()) == spec  # travels in checkpoints
    with pytest.raises(RuntimeError, match="Call prepare_data"):
        _ = MultiViewDataModule(_base(shapes_root)).spec


def test_labelled_loader_gives_the_same_plain_batches_for_the_base_and_the_multi_view_module(
    shapes_root,
):
    data = _data(shapes_root, MULTICROP)
    assert data.labelled_datamodule() is data.base
    plain = _base(shapes_root)
    plain.setup("fit")
    ours = next(iter(labelled_loader(data, "train", batch_size=5)))
    theirs = next(iter(labelled_loader(plain, "train", batch_size=5)))
    assert ours.images.shape == (5, 3, SIZE, SIZE)
    torch.testing.assert_close(ours.images, theirs.images)
    assert torch.equal(ours.labels, theirs.labels)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        labelled_loader(data, "dev")


def test_a_task_that_takes_labelled_images_rejects_multi_view_data_naming_what_fits():
    with pytest.raises(IncompatibleConfigError) as error:
        check_compatible(
            "glimpse.tasks.classification.ImageClassifier",
            "glimpse.data.ssl.multiview.MultiViewDataModule",
            CONF,
            ("vit", "ssl_shapes"),
        )
    message = str(error.value)
    assert "data=ssl_shapes yields multi_view_images batches" in message
    fitting = message.split("use one of: ")[1]
    assert "data=shapes" in fitting and "ssl_" not in fitting
    assert data_configs_by_kind(CONF)[MULTI_VIEW_IMAGES] == SSL_CONFIGS


def test_bad_bases_fail_with_one_sentence(shapes_root):
    with pytest.raises(ValueError, match="decode_device=cuda is not supported"):
        MultiViewDataModule(_base(shapes_root, decode_device="cuda"))
    with pytest.raises(ValueError, match="data.base is a dict; multi-view data needs"):
        MultiViewDataModule({"root": str(shapes_root)})
    with pytest.raises(ValueError, match="Unknown data.views.kind='simclr'"):
        MultiViewDataModule(_base(shapes_root), {"kind": "simclr"})


@pytest.mark.parametrize("name", SSL_CONFIGS)
def test_every_ssl_config_composes_and_builds_its_base(name, tmp_path):
    overrides = [f"data={name}", "data.batch_size=16", "data.num_workers=1"]
    if name in ("ssl_imagefolder", "ssl_imagenet_subset"):
        overrides.append(f"data.base.root={tmp_path}")
    cfg = compose_train(overrides, tmp_path)  # with train.yaml's default model, as test_configs
    OmegaConf.to_container(cfg, resolve=True)
    assert (cfg.data.base.batch_size, cfg.data.base.num_workers) == (16, 1)
    data = instantiate(cfg.data)
    assert isinstance(data, MultiViewDataModule) and isinstance(data.base, ImageFolderDataModule)
    assert data.recipe.kind == "byol" and len(data.transform.views) == 2
    assert data.base.image_size == {"ssl_shapes": 32}.get(
        name, 128 if "imagenette" in name or "imagewoof" in name else 224
    )
    dino = compose_train([*overrides, "data.views.kind=multicrop"], tmp_path)
    sizes = instantiate(dino.data).recipe.sizes(data.base.image_size)
    assert len(sizes) == 8 and sizes[2] == {"ssl_shapes": 16}.get(
        name, 64 if sizes[0] == 128 else 96
    )


def test_shapes_config_generates_its_data_and_runs_a_lightning_loop(tmp_path):
    """fast_dev_run through Lightning: one multi-crop training batch moved to the device whole,
    then one batch of each evaluation loader, with its dataloader index."""
    overrides = [
        "data=ssl_shapes",
        "data.base.num_per_class=5",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.views.kind=multicrop",
        "data.views.num_local=2",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    data = instantiate(compose_train(overrides, tmp_path).data)

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[tuple[str, int, tuple]] = []

        def training_step(self, batch, batch_idx):
            assert isinstance(batch, MultiViewImages)
            self.seen.append(("train", 0, tuple(tuple(v.shape) for v in batch.views)))
            return (self.weight * batch.views[0].mean()).sum()

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            assert isinstance(batch, LabelledImages)
            self.seen.append(("val", dataloader_idx, tuple(batch.images.shape)))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    task = Recorder()
    trainer = L.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False
    )
    trainer.fit(task, datamodule=data)
    assert task.seen == [
        ("train", 0, ((4, 3, 32, 32),) * 2 + ((4, 3, 16, 16),) * 2),
        ("val", 0, (4, 3, 32, 32)),
        ("val", 1, (4, 3, 32, 32)),
    ]
    assert data.spec.metadata["num_per_class"] == 5


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="../shared/data/imagenette2_sample absent")
def test_real_imagenette_sample_as_multi_crop_views(tmp_path):
    overrides = [
        "data=ssl_imagenette",
        f"data.base.root={IMAGENETTE}",
        "data.base.image_size=64",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.views.kind=multicrop",
        "data.views.num_local=2",
        "data.views.local_size=32",
    ]
    data = instantiate(compose_train(overrides, tmp_path).data)
    data.prepare_data()
    data.setup("fit")
    names = tuple(IMAGENETTE_CLASSES[w] for w in sorted(IMAGENETTE_CLASSES))
    assert data.spec.class_names == names and data.spec.kind == MULTI_VIEW_IMAGES
    batch = next(iter(data.train_dataloader()))
    assert [tuple(v.shape) for v in batch.views] == [(8, 3, 64, 64)] * 2 + [(8, 3, 32, 32)] * 2
    bank, val = data.val_dataloader()
    assert (len(bank.dataset), len(val.dataset)) == (500, 200)
    images = next(iter(val)).images
    assert images.shape == (8, 3, 64, 64) and torch.isfinite(images).all()
