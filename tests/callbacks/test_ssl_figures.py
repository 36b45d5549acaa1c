"""DINO's attention maps: the class token's last-block attention per head, the picture, the
callback's choice of images and outputs, and the maps of image files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _helpers_ssl import byol_task, dino_task
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from glimpse.batches import LabelledImages
from glimpse.callbacks.ssl_figures import AttentionMapFigures
from glimpse.data.prediction_inputs import decode_image_files
from glimpse.errors import ConfigError
from glimpse.models.attention_maps import class_token_attention, has_attention_maps
from glimpse.models.vit import vit_test
from glimpse.plotting.attention_maps import attention_map_figure
from glimpse.prediction import PredictionInputs


def test_maps_are_the_class_tokens_softmax_row_of_the_last_block():
    torch.manual_seed(0)
    vit = vit_test(num_classes=0).eval()
    images = torch.randn(2, 3, 32, 16)
    captured = {}
    block = vit.blocks[-1]
    block.norm1.register_forward_hook(lambda m, i, out: captured.setdefault("x", out))
    maps = class_token_attention(vit, images)
    x = captured["x"]  # (B, 1 + N, D) entering the last attention
    heads, dim = block.attn.num_heads, x.shape[-1]
    q, k, _ = block.attn.qkv(x).chunk(3, dim=-1)
    q = q.reshape(2, -1, heads, dim // heads).transpose(1, 2)
    k = k.reshape(2, -1, heads, dim // heads).transpose(1, 2)
    weights = (q[:, :, :1] @ k.transpose(-2, -1) / (dim // heads) ** 0.5).softmax(dim=-1)
    assert maps.shape == (2, heads, 8, 4)  # 32x16 px in 4 px patches
    torch.testing.assert_close(maps, weights[:, :, 0, 1:].reshape(2, heads, 8, 4))
    assert (maps.sum(dim=(2, 3)) < 1).all()  # the class token keeps a share


def test_the_picture_has_the_image_the_mean_and_each_head_per_row():
    pixels = np.random.default_rng(0).random((3, 16, 16, 3))
    figure = attention_map_figure(pixels, torch.rand(3, 2, 4, 4), ["a", "b", "c"])
    axes = figure.axes
    assert len(axes) == 3 * 4
    assert [a.get_title() for a in axes[:4]] == ["a", "mean of heads", "head 0", "head 1"]


def test_only_vit_backbones_have_attention_maps():
    assert has_attention_maps(dino_task().teacher["backbone"])
    assert not has_attention_maps(byol_task().student["backbone"])


class RecordingWandb(WandbLogger):
    """A WandbLogger that only records the images it is asked to log."""

    def __init__(self) -> None:
        self.images: list[tuple[str, list[str], int]] = []

    def log_image(self, key, images, step=None, **kwargs) -> None:
        self.images.append((key, images, step))


def _trainer(step: int, sanity: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=sanity,
        is_global_zero=True,
        global_step=step,
        num_val_batches=[2, 2],
        loggers=[RecordingWandb()],
    )


def _validate(callback, trainer, task, batches) -> None:
    for loader, items in enumerate(batches):
        for index, item in enumerate(items):
            callback.on_validation_batch_end(trainer, task, None, item, index, loader)
    callback.on_validation_epoch_end(trainer, task)


def test_the_callback_draws_the_teachers_maps_of_the_first_val_split_images(tmp_path: Path):
    task = dino_task()
    callback = AttentionMapFigures(str(tmp_path), num_images=3)
    bank = [LabelledImages(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))]
    first = LabelledImages(torch.randn(4, 3, 32, 32), torch.tensor([2, 1, 0, 1]))
    queries = [first, LabelledImages(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]
    _validate(callback, _trainer(0, sanity=True), task, [bank, queries])
    assert not (tmp_path / "figures").exists()  # the sanity check draws nothing
    run = _trainer(5)
    _validate(callback, run, task, [bank, queries])
    assert torch.equal(callback.samples[0], first.images[:3])
    assert callback.samples[1].tolist() == [2, 1, 0]
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["attention_maps_step0000005.png"]
    [(key, paths, step)] = run.loggers[0].images
    assert key == "val/attention_maps" and step == 5 and Path(paths[0]).is_file()


def test_image_files_get_a_picture_each_and_other_backbones_an_error(tmp_path: Path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(path)
    task = dino_task()
    inputs = PredictionInputs(images=decode_image_files([str(path)], task.spec, 1.0))
    [prediction] = task.predict_from(inputs, {})
    assert prediction.source == str(path) and list(prediction.figures) == ["attention_maps"]
    heads = task.feature_network["backbone"].blocks[-1].attn.num_heads
    assert prediction.lines == [f"{path}: attention maps of {heads} heads"]
    with pytest.raises(ConfigError, match="need a ViT backbone"):
        byol_task().predict_from(inputs, {})
