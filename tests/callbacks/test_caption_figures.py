"""CaptionFigures: which validation images it keeps, the PNGs and wandb entries it writes, the
cached-feature path through ``datamodule.display_image``, and the attention picture's panels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from glimpse.batches import CaptionedImages
from glimpse.callbacks.caption_figures import CaptionFigures
from glimpse.plotting.captions import attention_figure, caption_grid_figure

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
GRID = (2, 2)


class StubCaptioner:
    """Stands in for the Captioner: the spec and ``caption``, which records its inputs and
    gives image ``i`` a caption of ``i + 1`` words (attention maps when ``attends``)."""

    def __init__(self, attends: bool) -> None:
        self.spec = SimpleNamespace(mean=MEAN, std=STD)
        self.attends = attends
        self.inputs: list[Tensor] = []

    def caption(self, inputs: Tensor) -> list[SimpleNamespace]:
        self.inputs.append(inputs)
        captions = []
        for index in range(len(inputs)):
            words = ["a", "dog", "runs", "fast", "now"][: index + 1]
            attention = torch.rand(len(words), *GRID) if self.attends else None
            captions.append(SimpleNamespace(words=words, attention=attention, score=-1.0))
        return captions


class RecordingWandb(WandbLogger):
    """A WandbLogger that only records what it is asked to log."""

    def __init__(self) -> None:
        self.tables: list[tuple[str, list[str], list[list], int]] = []
        self.images: list[tuple[str, list[str], int]] = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None) -> None:
        self.tables.append((key, columns, data, step))

    def log_image(self, key, images, step=None, **kwargs) -> None:
        self.images.append((key, images, step))


class StubDataModule:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def display_image(self, split: str, name: str) -> Tensor:
        self.requests.append((split, name))
        return torch.full((3, 12, 12), 0.5)


def batch(first: int, size: int, images: Tensor) -> CaptionedImages:
    names = tuple(f"img{first + i}.jpg" for i in range(size))
    references = tuple((f"ref {first + i} one", f"ref {first + i} two") for i in range(size))
    empty = torch.zeros(0, dtype=torch.int64)
    captions = torch.zeros(0, 3, dtype=torch.int64)
    return CaptionedImages(images, captions, empty, empty, references, names)


def trainer(step: int, sanity: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=sanity,
        is_global_zero=True,
        global_step=step,
        loggers=[RecordingWandb()],
        datamodule=StubDataModule(),
    )


def validate(callback: CaptionFigures, trainer_, module, batches) -> None:
    for index, item in enumerate(batches):
        callback.on_validation_batch_end(trainer_, module, None, item, index)
    callback.on_validation_epoch_end(trainer_, module)


def test_writes_caption_grid_and_one_attention_picture_per_image(tmp_path: Path):
    module = StubCaptioner(attends=True)
    callback = CaptionFigures(str(tmp_path), num_images=4)
    images = torch.randn(6, 3, 16, 16)
    sanity = trainer(0, sanity=True)
    validate(callback, sanity, module, [batch(10, 2, torch.randn(2, 3, 16, 16))])
    assert callback.inputs == [] and module.inputs == []  # the sanity check draws nothing
    run = trainer(7)
    validate(callback, run, module, [batch(0, 3, images[:3]), batch(3, 3, images[3:])])

    files = sorted(path.name for path in (tmp_path / "figures").iterdir())
    attention_files = [f"attention_step0000007_{i}.png" for i in range(4)]
    assert files == [*attention_files, "captions_step0000007.png"]
    assert callback.names == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    assert torch.equal(module.inputs[0], images[:4])
    [wandb] = run.loggers
    [(key, columns, rows, step)] = wandb.tables
    assert (key, columns, step) == ("val/captions", ["image", "generated", "references"], 7)
    generated = ["a", "a dog", "a dog runs", "a dog runs fast"]
    assert all(type(row[0]).__name__ == "Image" for row in rows)  # wandb.Image
    assert [row[1:] for row in rows] == [
        [generated[i], f"ref {i} one\nref {i} two"] for i in range(4)
    ]
    [(image_key, paths, _)] = wandb.images
    assert image_key == "val/attention" and [Path(p).name for p in paths] == attention_files


def test_unnormalises_kept_images_with_the_spec(tmp_path: Path):
    module = StubCaptioner(attends=False)
    callback = CaptionFigures(str(tmp_path), num_images=2)
    pixels = torch.rand(2, 3, 8, 8)
    normalised = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    validate(callback, trainer(3), module, [batch(0, 2, normalised)])
    shown = callback._display_pixels(trainer(3), module)
    np.testing.assert_allclose(shown, pixels.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["captions_step0000003.png"]


def test_feature_batches_caption_grids_and_show_datamodule_images(tmp_path: Path):
    module = StubCaptioner(attends=False)
    callback = CaptionFigures(str(tmp_path), num_images=3, every_n_validations=2)
    grids = torch.randn(4, GRID[0] * GRID[1], 5)
    first = trainer(5)
    validate(callback, first, module, [batch(0, 2, grids[:2]), batch(2, 2, grids[2:])])
    assert torch.equal(module.inputs[0], grids[:3])
    assert first.datamodule.requests == [("val", f"img{i}.jpg") for i in range(3)]
    validate(callback, trainer(6), module, [batch(0, 4, grids)])  # skipped: every 2nd pass
    validate(callback, trainer(9), module, [batch(0, 4, grids)])
    assert len(module.inputs) == 2 and torch.equal(module.inputs[1], grids[:3])
    files = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert files == ["captions_step0000005.png", "captions_step0000009.png"]


def test_attention_figure_has_the_image_then_one_lit_panel_per_word():
    pixels = np.full((16, 16, 3), 0.8)
    maps = torch.zeros(3, 2, 2)
    maps[0, 0, 0] = maps[1, 1, 1] = maps[2, 0, 1] = 1.0
    figure = attention_figure(pixels, ["a", "red", "ball"], maps)
    assert [axes.get_title() for axes in figure.axes] == ["image", "a", "red", "ball"]
    first_word = figure.axes[1].images[0].get_array()
    assert first_word.shape == (16, 16, 3)
    assert first_word[0, 0, 0] > 0.75 > 0.2 >= first_word[15, 15, 0]  # lit where it looked
    with pytest.raises(ValueError, match="2 words but 3 attention maps"):
        attention_figure(pixels, ["a", "b"], maps)


def test_caption_grid_figure_writes_captions_under_each_image():
    figure = caption_grid_figure(
        np.zeros((3, 8, 8, 3)), ["a dog", "a cat", "a man"], [("dog on grass",), ("cat",), ()]
    )
    labels = [axes.get_xlabel() for axes in figure.axes]
    assert len(labels) == 3
    assert labels[0] == "generated: a dog\nreference: dog on grass"
    assert labels[2] == "generated: a man"
